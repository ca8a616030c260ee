"""``mmflow app`` in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``, through Selenium)
types a sentence on the embedded default model's talking-head tab, clicks generate, and gets back a video with a
video and an audio stream; an empty text shows the pipeline's message in the page, not a traceback.

Set ``MMFLOW_APP_SCREENSHOT=docs/images/app.png`` to also save a screenshot of the page after the generation.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("gradio", reason="install the app extra: pip install -e '.[app]' (scripts/setup.sh does)")
selenium = pytest.importorskip("selenium", reason="install selenium (requirements/test.txt)")
pytest.importorskip("mmflow_jamflow", reason="install plugins/jamflow (scripts/setup.sh does)")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from mmflow.testing import free_port  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="no Chromium/chromedriver on PATH: apt-get install -y chromium chromium-driver (.ci/run does)")

SENTENCE = "Hello there."


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """``mmflow app`` in a subprocess on a free loopback port, as a user starts it."""
    port = free_port()
    log = tmp_path_factory.mktemp("app") / "app.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "mmflow.cli", "app", "--port", str(port), "--steps", "4"],
                                   stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"mmflow app exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mmflow app did not answer on {url}:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1800", "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _text_box(driver):
    return driver.find_element(By.CSS_SELECTOR, "#text-input textarea")


def _open(driver, url):
    """Load the page and wait until the talking-head tab's text box and button are there (Gradio renders late)."""
    driver.get(url)
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#text-input textarea")
                                    and d.find_elements(By.ID, "generate-talking_head"))


def _generate(driver):
    button = WebDriverWait(driver, 30).until(
        lambda d: next((b for b in d.find_elements(By.ID, "generate-talking_head") if b.is_enabled()), None))
    driver.execute_script("arguments[0].scrollIntoView();", button)
    button.click()


def test_a_sentence_becomes_a_video_with_sound_in_the_browser(app_url, browser, tmp_path):
    import av

    _open(browser, app_url)
    wait = WebDriverWait(browser, 60)
    _text_box(browser).send_keys(SENTENCE)
    _generate(browser)
    progress = []  # what the page says while the model runs

    def result(driver):
        progress.extend(e.text for e in driver.find_elements(By.CSS_SELECTOR, ".wrap") if "talking_head:" in e.text)
        return next((v for v in driver.find_elements(By.CSS_SELECTOR, "#output-video video")
                     if v.get_attribute("src")), None)

    video = WebDriverWait(browser, 90, poll_frequency=0.1).until(result)
    assert any("sampling" in text for text in progress), "no progress was shown while the model ran"
    src = video.get_attribute("src")
    assert src.startswith(app_url), src  # served by the app itself
    path = tmp_path / "result.mp4"
    with urllib.request.urlopen(src, timeout=30) as response:
        path.write_bytes(response.read())
    with av.open(str(path)) as container:
        kinds = {stream.type for stream in container.streams}
        assert {"video", "audio"} <= kinds, kinds
        frames = sum(1 for _ in container.decode(video=0))
        assert frames > 5
    # the browser can play it: it read the duration from the container
    duration = wait.until(lambda d: d.execute_script("const v = arguments[0]; return v.readyState >= 1 && "
                                                     "v.duration;", video))
    assert duration > 0.3
    assert browser.find_elements(By.CSS_SELECTOR, "#output-audio audio, #output-audio [data-testid], #output-audio")
    # offline: every script, style, font and file the page loaded came from the app itself
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
    elsewhere = [name for name in loaded if not name.startswith((app_url, "data:", "blob:"))]
    assert loaded and not elsewhere, elsewhere
    shot = os.environ.get("MMFLOW_APP_SCREENSHOT")
    if shot:
        Path(shot).parent.mkdir(parents=True, exist_ok=True)
        browser.execute_script("window.scrollTo(0, 0);")
        browser.save_screenshot(shot)


def test_a_bad_input_shows_the_pipelines_message_in_the_page(app_url, browser):
    _open(browser, app_url)
    wait = WebDriverWait(browser, 60)
    _text_box(browser).clear()
    _generate(browser)
    body = wait.until(lambda d: (text := d.find_element(By.TAG_NAME, "body").text) and "needs text=" in text and text)
    assert "Traceback" not in body
