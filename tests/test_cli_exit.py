"""The ``mmflow`` script's quick exit: the same exit code, output and clean-up as a normal exit, minus the
interpreter's teardown."""

import subprocess
import sys
import textwrap
from pathlib import Path


def run_script(body: str, tmp_path) -> subprocess.CompletedProcess:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)


def test_the_quick_exit_keeps_the_code_the_output_and_the_atexit_clean_up(tmp_path):
    done = run_script("""
        import atexit, logging, pathlib, sys
        from mmflow.cli import exit_without_teardown
        atexit.register(lambda: pathlib.Path("cleaned").write_text("yes"))
        logging.basicConfig(filename="log.txt", level=logging.INFO)
        logging.getLogger("x").info("logged")
        sys.stdout.write("partial line without newline")
        print("to stderr", file=sys.stderr, end="")
        exit_without_teardown(3)
        print("never")
    """, tmp_path)
    assert done.returncode == 3
    assert done.stdout == "partial line without newline"
    assert done.stderr == "to stderr"
    assert (tmp_path / "cleaned").read_text() == "yes"
    assert "logged" in (tmp_path / "log.txt").read_text()


def test_a_running_non_daemon_thread_is_waited_for(tmp_path):
    done = run_script("""
        import pathlib, threading, time
        from mmflow.cli import exit_without_teardown
        def finish():
            time.sleep(0.3)
            pathlib.Path("thread-finished").write_text("yes")
        threading.Thread(target=finish).start()
        exit_without_teardown(0)
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "thread-finished").read_text() == "yes"


def test_generate_and_train_exit_quickly_and_nothing_else(tmp_path, monkeypatch):
    from mmflow import cli

    exits = []
    monkeypatch.setattr(cli, "exit_without_teardown", lambda code: exits.append(("quick", code)))
    monkeypatch.setattr(cli.sys, "exit", lambda code: exits.append(("normal", code)))
    monkeypatch.setattr(cli, "main", lambda: 0)
    for argv in (["mmflow", "generate", "--text", "hi"], ["mmflow", "train"], ["mmflow", "evaluate"], ["mmflow"]):
        monkeypatch.setattr(cli.sys, "argv", argv)
        cli.run()
    assert exits == [("quick", 0), ("quick", 0), ("normal", 0), ("normal", 0)]


def test_the_training_recipes_end_with_the_quick_exit():
    """``accelerate launch recipes/*.py`` ends like ``mmflow train``: no teardown for gloo's threads to abort in."""
    recipes = Path(__file__).resolve().parents[1] / "recipes"
    for name in ("train.py", "jamflow.py", "vocoder.py"):
        assert 'if __name__ == "__main__":\n    exit_without_teardown(main())' in (recipes / name).read_text(), name
