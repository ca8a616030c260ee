import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Run the test's torch work on one thread. On a busy 2-core machine two OpenMP threads that wait for
    each other by spinning cost several times the CPU time of one (the toy demo test: 303 s against 33 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tri_stream_pipeline(tmp_path_factory):
    """The three-stream example plugin (``examples/tri_stream``) trained for a few steps with ``mmflow train``: the
    folder of its exported ``MMFlowPipeline``. Shared by the tests of the generic pipeline, CLI and app."""
    tri = pytest.importorskip("mmflow_tri_stream.plugin", reason="install examples/tri_stream (scripts/setup.sh does)")
    from mmflow.cli import main as mmflow_main

    out = tmp_path_factory.mktemp("tri") / "run"
    status = mmflow_main(["train", "--config", tri.config_path(), "--output-dir", str(out), "--total-steps", "4",
                          "--warmup-steps", "1", "--batch-size", "2"])
    assert status == 0
    return out / "pipeline"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
