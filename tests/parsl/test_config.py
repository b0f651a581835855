"""Parsl configuration loading (YAML schema and .py files), failure classification, executor
factory and submit-file parsing. Nothing here starts Parsl.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.execution.parsl_executor import (
    ParslConfigError,
    ParslQuantumExecutor,
    ParslSiteConfig,
    _worker_slots,
    is_lost_worker_error,
    load_parsl_config,
    lost_worker_retry_handler,
)
from pipeline.execution.submit import SubmitConfigError, load_submit_config, make_executor


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_slurm_yaml_builds_htex_on_slurm(tmp_path: Path) -> None:
    from parsl.executors import HighThroughputExecutor
    from parsl.launchers import SrunLauncher
    from parsl.providers import SlurmProvider

    f = _write(
        tmp_path / "slurm.yaml",
        """
        retries: 2
        htex: {max_workers_per_node: 16, cores_per_worker: 2, mem_per_worker: 3.5, address: 10.0.0.5}
        export_env: {CCDFLOW_X: "a b"}
        provider:
          kind: slurm
          partition: normal
          account: rubin
          walltime: "02:00:00"
          nodes_per_block: 4
          max_blocks: 5
          launcher: srun
          worker_init: source /project/venv/bin/activate
        """,
    )
    config, site = load_parsl_config(f, run_dir=tmp_path / "runinfo")
    assert site is not None and site.provider.kind == "slurm"
    (htex,) = config.executors
    assert isinstance(htex, HighThroughputExecutor)
    assert htex.max_workers_per_node == 16 and htex.cores_per_worker == 2 and htex.mem_per_worker == 3.5
    prov = htex.provider
    assert isinstance(prov, SlurmProvider) and isinstance(prov.launcher, SrunLauncher)
    assert prov.partition == "normal" and prov.account == "rubin" and prov.walltime == "02:00:00"
    assert prov.nodes_per_block == 4 and prov.max_blocks == 5
    lines = prov.worker_init.splitlines()
    assert lines[0] == f'export PATH="{Path(sys.executable).parent}:$PATH"'
    assert "export CCDFLOW_X='a b'" in lines and lines[-1] == "source /project/venv/bin/activate"
    # 2 cores per worker: no single-thread exports; the worker's quanta get 2 BLAS threads.
    assert not any("OMP_NUM_THREADS" in x for x in lines)
    assert "export CCDFLOW_CORES_PER_QUANTUM=2" in lines
    assert config.retries == 2 and config.retry_handler is lost_worker_retry_handler
    assert config.run_dir == str(tmp_path / "runinfo")
    assert _worker_slots(site) == 4 * 5 * 16
    assert htex.encrypted  # traffic crosses the network: CurveZMQ on by default
    assert site.log_level == "WARNING" and site.quanta_per_task == "auto"


def test_local_defaults_skip_encryption_only_on_loopback(tmp_path: Path) -> None:
    config, _ = load_parsl_config({"htex": {"poll_period": 5}}, run_dir=tmp_path)
    htex = config.executors[0]
    assert htex.address == "127.0.0.1" and not htex.encrypted and htex.poll_period == 5
    config, _ = load_parsl_config({"htex": {"address": "10.1.2.3"}}, run_dir=tmp_path)
    assert config.executors[0].encrypted
    config, _ = load_parsl_config({"htex": {"encrypted": True}}, run_dir=tmp_path)
    assert config.executors[0].encrypted


@pytest.mark.parametrize(
    "kind, extra, cls",
    [
        ("local", {}, "LocalProvider"),
        ("pbs", {"queue": "workq", "account": "x", "cpus_per_node": 8}, "PBSProProvider"),
        ("lsf", {"queue": "normal", "project": "p", "cores_per_node": 8}, "LSFProvider"),
        ("kubernetes", {"image": "ccdflow:latest", "namespace": "rubin"}, "KubernetesProvider"),
    ],
)
def test_every_provider_kind(kind: str, extra: dict, cls: str, tmp_path: Path) -> None:
    if kind == "kubernetes":
        import importlib.util

        if importlib.util.find_spec("kubernetes") is None:
            with pytest.raises(
                ParslConfigError, match=r"needs the Python package\(s\) kubernetes.*pip install"
            ):
                load_parsl_config({"provider": {"kind": kind, **extra}})
            return
    config, site = load_parsl_config({"provider": {"kind": kind, **extra}}, run_dir=tmp_path)
    prov = config.executors[0].provider
    assert type(prov).__name__ == cls
    for k, v in extra.items():
        assert getattr(prov, k) == v
    assert config.executors[0].address == ("127.0.0.1" if kind == "local" else config.executors[0].address)
    # Single-core workers get one BLAS thread each.
    assert "OMP_NUM_THREADS=1" in prov.worker_init
    assert "CCDFLOW_CORES_PER_QUANTUM" not in prov.worker_init


@pytest.mark.parametrize("cores, exported", [(1, None), (0.5, None), (2, "2"), (2.5, "2"), (8, "8")])
def test_worker_init_exports_whole_cores_per_quantum(
    cores: float, exported: str | None, tmp_path: Path
) -> None:
    """A worker with several cores is told how many (whole) cores its quanta may thread over."""
    config, _ = load_parsl_config({"htex": {"cores_per_worker": cores}}, run_dir=tmp_path)
    lines = config.executors[0].provider.worker_init.splitlines()
    found = [x.split("=", 1)[1] for x in lines if x.startswith("export CCDFLOW_CORES_PER_QUANTUM=")]
    assert found == ([] if exported is None else [exported])
    single = "export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1"
    assert (single in lines) is (exported is None)


def test_yaml_errors_name_field_and_fix(tmp_path: Path) -> None:
    with pytest.raises(ParslConfigError, match=r"does not accept partitio;.*allowed keys: .*partition"):
        load_parsl_config({"provider": {"kind": "slurm", "partitio": "x"}})
    with pytest.raises(ParslConfigError, match=r"htex\.max_workers_per_nod: Extra inputs"):
        load_parsl_config({"htex": {"max_workers_per_nod": 2}})
    with pytest.raises(ParslConfigError, match=r"provider\.kind"):
        load_parsl_config({"provider": {"kind": "condor"}})
    with pytest.raises(ParslConfigError, match=r"retries: Input should be greater than or equal to 0"):
        load_parsl_config({"retries": -1})
    with pytest.raises(ParslConfigError, match="unknown provider.launcher 'mpirun'; choose one of"):
        load_parsl_config({"provider": {"kind": "slurm", "launcher": "mpirun"}})
    with pytest.raises(ParslConfigError, match="does not exist"):
        load_parsl_config(tmp_path / "nope.yaml")
    with pytest.raises(ParslConfigError, match=r"must end in \.py or \.yaml"):
        load_parsl_config(_write(tmp_path / "c.toml", "x = 1\n"))
    with pytest.raises(ParslConfigError, match="not valid YAML"):
        load_parsl_config(_write(tmp_path / "bad.yaml", "htex: [1,\n"))


def test_python_config_file(tmp_path: Path) -> None:
    from parsl.config import Config

    good = _write(
        tmp_path / "good.py",
        """
        from parsl.config import Config
        from parsl.executors import HighThroughputExecutor
        from parsl.providers import LocalProvider
        config = Config(executors=[HighThroughputExecutor(label="mine", provider=LocalProvider())], retries=3)
        """,
    )
    config, site = load_parsl_config(good)
    assert isinstance(config, Config) and site is None and config.retries == 3
    assert config.executors[0].label == "mine"
    with pytest.raises(ParslConfigError, match="must define `config = parsl.config.Config"):
        load_parsl_config(_write(tmp_path / "none.py", "x = 1\n"))
    with pytest.raises(ParslConfigError, match="raised ZeroDivisionError"):
        load_parsl_config(_write(tmp_path / "boom.py", "1 / 0\n"))


def test_lost_worker_classification() -> None:
    from parsl.executors.high_throughput.errors import ManagerLost, WorkerLost

    assert is_lost_worker_error(WorkerLost(1, "host"))
    assert is_lost_worker_error(ManagerLost(b"abc", "host"))
    assert not is_lost_worker_error(RuntimeError("injected failure"))
    assert lost_worker_retry_handler(WorkerLost(1, "h"), None) == 1.0
    assert lost_worker_retry_handler(ValueError("x"), None) > 1e6


def test_executor_window_and_factory(tmp_path: Path) -> None:
    g = tmp_path / "g.qg"
    g.write_bytes(b"x")
    ex = ParslQuantumExecutor(
        g, tmp_path, {"htex": {"max_workers_per_node": 3}, "provider": {"max_blocks": 2}}
    )
    assert ex.max_in_flight == 2 * (3 * 2) + 1 * 2 and ex.dfk is None and ex.lost_worker_retries == 2
    ex.shutdown()  # never started: nothing to clean up
    ex = ParslQuantumExecutor(
        g, tmp_path, {"quanta_per_task": 4, "max_in_flight": 10, "lost_worker_retries": 0}
    )
    assert ex.max_in_flight == 10 and ex.quanta_per_task == 4 and ex.lost_worker_retries == 0
    with pytest.raises(ParslConfigError, match="graph file .* does not exist"):
        ParslQuantumExecutor(tmp_path / "missing.qg", tmp_path)
    qg = tmp_path / "g2.qg"
    qg.write_bytes(b"x")
    assert make_executor("parsl", None, tmp_path, processes=3, graph_path=qg).tasks_in_flight == 2 * 3 + 1
    assert make_executor("parsl", None, tmp_path, graph_path=qg).tasks_in_flight == 2 * 2 + 1
    with pytest.raises(ValueError, match="--parsl-config needs --executor parsl"):
        make_executor("pool", None, tmp_path, parsl_config="x.yaml")
    with pytest.raises(ValueError, match="--executor must be one of"):
        make_executor("dask", None, tmp_path)
    assert ParslSiteConfig().provider.kind == "local"


def test_submit_file_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCDFLOW_REPO", "/data/repo")
    f = _write(
        tmp_path / "sub.yaml",
        """
        pipelineYaml: pipelines/isr.yaml#step1
        butlerConfig: $CCDFLOW_REPO
        inCollection: kast_blue/raw/all, kast_blue/calib
        dataQuery: "exposure.observation_type = 'science'"
        output: u/me/isr
        computeSite: cluster
        requestCpus: 2
        requestMemory: 6144
        sites:
          cluster:
            provider: {kind: slurm, partition: normal}
        """,
    )
    cfg = load_submit_config(f)
    assert cfg.pipeline == str(tmp_path / "pipelines/isr.yaml") + "#step1"
    assert cfg.repo == "/data/repo" and cfg.inputs == ["kast_blue/raw/all", "kast_blue/calib"]
    site = cfg.site_config()
    assert site["htex"] == {"cores_per_worker": 2.0, "mem_per_worker": 6.0}
    assert site["provider"] == {"kind": "slurm", "partition": "normal"}
    local = load_submit_config({"pipeline": "p.yaml", "repo": "r", "cores_per_quantum": 1})
    assert local.site_config()["provider"] == {"kind": "local"}
    with pytest.raises(SubmitConfigError, match="compute_site 'gpu' is not defined"):
        load_submit_config({"pipeline": "p", "repo": "r", "compute_site": "gpu"}).site_config()
    with pytest.raises(SubmitConfigError, match=r"repo: required field missing; outptu: Extra inputs"):
        load_submit_config({"pipeline": "p", "outptu": "x"})
    with pytest.raises(SubmitConfigError, match="does not exist"):
        load_submit_config(tmp_path / "nope.yaml")


def test_pipetask_run_rejects_bad_parsl_config_before_writing(tmp_path: Path) -> None:
    """A bad --parsl-config is one clear error and leaves the repository untouched."""
    import subprocess

    from butler import Butler

    from .conftest import REPO_ROOT, make_toy_repo_db

    make_toy_repo_db(tmp_path / "repo", 1, 1, shape=(4, 4))[0].close()
    bad = _write(tmp_path / "bad.yaml", "htex: {max_workers_per_nod: 2}\n")
    r = subprocess.run(
        [
            str(Path(sys.executable).parent / "pipetask"),
            "run",
            "-b",
            str(tmp_path / "repo"),
            "-t",
            "_toy_tasks.SubtractMedianTask:subtractMedian",
            "-i",
            "ToyCam/raw/all",
            "-o",
            "u/bad",
            "--register-dataset-types",
            "--parsl-config",
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(REPO_ROOT),
    )
    assert r.returncode != 0
    assert "htex.max_workers_per_nod: Extra inputs are not permitted" in r.stderr
    assert "Traceback" not in r.stderr
    with Butler(tmp_path / "repo") as b:
        assert b.registry.query_collections("u/*") == []


def test_failure_classification_in_the_executor(tmp_path: Path) -> None:
    """Lost workers are resubmitted, failed blocks stop the run, other errors fail one quantum."""
    import uuid
    from concurrent.futures import Future

    from parsl.executors.high_throughput.errors import WorkerLost
    from parsl.jobs.errors import TooManyJobFailuresError

    from pipeline.execution.parsl_executor import ParslWorkersUnavailableError, is_no_workers_error
    from pipeline.execution.runner import ExecutionError

    assert is_no_workers_error(TooManyJobFailuresError("blocks failed"))
    assert not is_no_workers_error(WorkerLost(1, "h"))
    g = tmp_path / "g.qg"
    g.write_bytes(b"x")
    ex = ParslQuantumExecutor(g, tmp_path, {"lost_worker_retries": 1})
    ex._dfk = object()  # "running" (nothing is started: _attempt is replaced below)
    resubmitted: list[tuple[uuid.UUID, int]] = []
    ex._attempt = lambda items: resubmitted.extend((q, n) for q, _, n in items)  # type: ignore[method-assign]

    def failed(exc: BaseException) -> Future:
        f: Future = Future()
        f.set_exception(exc)
        return f

    qid = uuid.uuid4()
    # A lost worker: resubmitted once (lost_worker_retries=1) ...
    outer: Future = Future()
    ex._on_done(failed(WorkerLost(7, "node1")), [(qid, outer, 0)])
    assert resubmitted == [(qid, 1)] and not outer.done() and ex.n_lost == 1
    # ... then the quantum fails with WorkerLostError.
    ex._on_done(failed(WorkerLost(7, "node1")), [(qid, outer, 1)])
    res = outer.result(timeout=1)
    assert res.status == "failed" and res.error.startswith("WorkerLostError: ") and "2 time(s)" in res.error
    # No worker block could start: the future raises (the driver stops with one clear error).
    outer = Future()
    ex._on_done(failed(TooManyJobFailuresError("Job is marked as MISSING")), [(qid, outer, 0)])
    with pytest.raises(
        ParslWorkersUnavailableError, match="could not start any worker: Job is marked as MISSING"
    ):
        outer.result(timeout=1)
    assert issubclass(ParslWorkersUnavailableError, ExecutionError)
    # Any other infrastructure error fails only that quantum.
    outer = Future()
    ex._on_done(failed(ModuleNotFoundError("No module named 'pipeline'")), [(qid, outer, 0)])
    res = outer.result(timeout=1)
    assert res.status == "failed" and res.error.startswith("ParslError: ModuleNotFoundError")
    assert "installed on the workers" in res.error
    ex._dfk = None
