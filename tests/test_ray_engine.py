"""The Ray Data engine (pipeline/ray_engine.py, `calitag batch --engine ray`), Parquet output and
`calitag calibrate --scores`: same records as the local engine, actor crashes, resume, a joined cluster."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from calitag.cli import main
from calitag.errors import MissingDependencyError, OutputError
from calitag.pipeline.records import read_all_scores

ray = pytest.importorskip("ray", reason="the Ray engine is the calitag[ray] extra")
pa = pytest.importorskip("pyarrow")

REPO = Path(__file__).resolve().parent.parent
BAD = {"corrupt.wav": b"RIFF\x24\x00\x00\x00WAVEfmt ", "notes.wav": b"this is not audio\n"}


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance (2 CPUs, no dashboard) for the whole session; the engine reuses it."""
    if ray.is_initialized():
        yield ray
        return
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory, audio_samples) -> Path:
    """The bundled clips plus a truncated wav and a text file named .wav."""
    root = tmp_path_factory.mktemp("clips")
    for path in sorted(audio_samples.glob("*.wav")):
        shutil.copy(path, root / path.name)
    for name, data in BAD.items():
        (root / name).write_bytes(data)
    return root


def _batch(*args: str):
    return CliRunner().invoke(main, ["batch", *args, "--model", "debug", "--device", "cpu", "--all-scores"])


def _jsonl(path: Path) -> dict[str, dict]:
    return {r["path"]: r for r in map(json.loads, path.read_text().splitlines())}


@pytest.fixture(scope="module")
def local_jsonl(folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "local.jsonl"
    result = _batch(str(folder), "--out", str(out), "--workers", "0")
    assert result.exit_code == 1, result.output  # the two bad files
    return out


@pytest.fixture(scope="module")
def ray_parquet(ray_local, folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ray") / "out"
    result = _batch(f"file://{folder}", "--engine", "ray", "--out", str(out), "--actors", "1", "--rows-per-part", "16")
    assert result.exit_code == 1, result.output
    return out


def _parquet_records(out: Path) -> dict[str, dict]:
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    names = json.loads(table.schema.metadata[b"calitag.class_names"])
    records = {}
    for row in table.to_pylist():
        if row["scores"] is not None:
            row["scores"] = dict(zip(names, row["scores"]))
        records[row["path"]] = row
    return records


def _part_paths(out: Path) -> list[str]:
    """Every path recorded in the complete part files, duplicates kept."""
    import pyarrow.parquet as pq

    return [p for part in sorted(out.glob("part-*.parquet")) for p in pq.read_table(part).column("path").to_pylist()]


def test_ray_records_equal_local_records(local_jsonl, ray_parquet):
    """A file:// SOURCE on Ray gives the local engine's records: same files, errors, tags, durations, scores to 1e-6."""
    local, remote = _jsonl(local_jsonl), _parquet_records(ray_parquet)
    assert sorted(local) == sorted(remote) and len(local) == 47
    for path, mine in local.items():
        theirs = remote[path]
        assert bool(mine.get("error")) == bool(theirs["error"]), path
        if mine.get("error"):
            continue
        assert theirs["tags"] == mine["tags"] and theirs["duration_s"] == mine["duration_s"]
        assert theirs["model"] == "debug" and theirs["thresholds"] is None
        np.testing.assert_allclose([theirs["scores"][c] for c in mine["scores"]], list(mine["scores"].values()),
                                   atol=1e-6)
    assert "not audio" in remote[str(Path(next(iter(local))).parent / "notes.wav")]["error"]


def test_parquet_scores_load_without_json(ray_parquet):
    """pyarrow, pandas, polars and Ray read all scores as a fixed-size list column with the class names in the metadata."""
    import pyarrow.parquet as pq

    table = pq.read_table(ray_parquet)
    field = table.schema.field("scores")
    assert pa.types.is_fixed_size_list(field.type) and field.type.list_size == 5
    assert len(json.loads(table.schema.metadata[b"calitag.class_names"])) == 5
    frame = table.to_pandas()
    assert len(frame) == 47 and frame["error"].notna().sum() == 2
    polars = pytest.importorskip("polars")
    scores = polars.read_parquet(list(ray_parquet.glob("part-*.parquet")))["scores"]
    assert scores.dtype == polars.Array(polars.Float32, 5)
    assert ray.data.read_parquet(str(ray_parquet)).count() == 47


def test_yamnet_on_ray_equals_local(ray_local, yamnet_cached, audio_samples, tmp_path):
    """With YAMNet, Ray's clip scores equal the local engine's to 1e-6."""
    from calitag.pipeline.batch import run_batch
    from calitag.pipeline.tagger import Tagger

    paths = [str(p) for p in sorted(audio_samples.glob("*.wav"))[:8]]
    tagger = Tagger.load("yamnet", device="cpu", batch_size=4)
    remote = {r.path: r for r in run_batch(tagger, paths, engine="ray")}
    local = run_batch(tagger, paths, workers=0)
    assert len(remote) == len(local) == 8
    for result in local:
        np.testing.assert_allclose(remote[result.path].scores, result.scores, atol=1e-6)
        assert [l for l, _ in remote[result.path].tags] == [l for l, _ in result.tags]


def test_run_batch_on_ray_with_segments_equals_local(ray_local, folder, tmp_path):
    """calitag.run_batch(engine="ray", segment_s=...) writes the local engine's JSONL records: same files, errors,
    tags, durations and segment timelines, scores to 1e-6."""
    import calitag
    from calitag.pipeline.records import RecordOptions
    from calitag.pipeline.tagger import Tagger

    tagger = Tagger.load("debug", device="cpu", batch_size=4)
    records = RecordOptions(fmt="jsonl", all_scores=True)
    outputs = {engine: tmp_path / f"{engine}.jsonl" for engine in ("local", "ray")}
    calitag.run_batch(tagger, folder, out=outputs["local"], segment_s=1.5, records=records, workers=0)
    results = calitag.run_batch(tagger, folder, out=outputs["ray"], engine="ray", segment_s=1.5, records=records)
    assert len(results) == 47 and all(r.segments is not None for r in results if r.error is None)
    local, remote = _jsonl(outputs["local"]), _jsonl(outputs["ray"])
    assert sorted(local) == sorted(remote) and sum(len(r.get("segments", ())) > 1 for r in local.values()) > 30
    for path, mine in local.items():
        theirs = remote[path]
        assert ("error" in mine) == ("error" in theirs), path
        if "error" in mine:
            continue
        assert theirs["tags"] == mine["tags"] and theirs["duration_s"] == mine["duration_s"]
        assert len(theirs["segments"]) == len(mine["segments"])
        for a, b in zip(mine["segments"] + [mine], theirs["segments"] + [theirs]):
            assert (a.get("start_s"), a.get("end_s"), a["tags"]) == (b.get("start_s"), b.get("end_s"), b["tags"])
            np.testing.assert_allclose([b["scores"][c] for c in a["scores"]], list(a["scores"].values()), atol=1e-6)


def _actor_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::MapWorker(MapBatches(_Scorer)"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the actor process through /proc")
def test_killed_actor_is_restarted_and_every_file_comes_once(ray_local, folder):
    """An actor killed mid-run (SIGKILL) is replaced by Ray, and every file still gets exactly one result."""
    from calitag.pipeline.batch import run_batch
    from calitag.pipeline.ray_engine import RayOptions
    from calitag.pipeline.tagger import Tagger

    paths = sorted(str(p) for p in folder.glob("*.wav"))
    killed: list[int] = []

    def kill_once(result) -> None:
        if not killed and (pids := _actor_pids()):
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    # One file per call and small chunks: the actor has work left when the first result arrives.
    options = RayOptions(actors=1, files_per_task=1, chunks_per_call=1)
    results = run_batch(Tagger.load("debug", device="cpu", batch_size=2), paths, engine="ray", ray=options,
                        on_result=kill_once)
    assert killed, "no actor process found to kill"
    assert sorted(r.path for r in results) == paths
    assert sum(r.error is not None for r in results) == 2


def test_calibrate_from_batch_scores_equals_calibrate_on_folder(folder, local_jsonl, ray_parquet, tmp_path,
                                                                 audio_samples):
    """`calibrate --scores` on a JSONL or Parquet batch output writes the thresholds `calibrate FOLDER` writes."""
    common = ["--labels", str(audio_samples / "labels.csv"), "--model", "debug", "--skip-missing", "--device", "cpu"]
    thresholds = {}
    for name, source in {"folder": [str(folder)], "jsonl": ["--scores", str(local_jsonl)],
                         "parquet": ["--scores", str(ray_parquet)]}.items():
        out = tmp_path / f"{name}.json"
        result = CliRunner().invoke(main, ["calibrate", *source, *common, "--out", str(out)])
        assert result.exit_code == 0, result.output
        thresholds[name] = json.loads(out.read_text())["thresholds"]
    assert thresholds["folder"] != [0.5] * 5  # something was fitted
    np.testing.assert_allclose(thresholds["jsonl"], thresholds["folder"], atol=1e-5)
    np.testing.assert_allclose(thresholds["parquet"], thresholds["folder"], atol=1e-5)


def test_scores_of_another_model_or_top_k_are_refused(local_jsonl, ray_parquet, folder, tmp_path):
    """Reading batch scores refuses another model's output and an output without all scores."""
    from calitag.models.registry import get_spec

    yamnet = get_spec("yamnet").class_names
    for source in (local_jsonl, ray_parquet):
        with pytest.raises(OutputError, match="not 'yamnet'"):
            read_all_scores(source, model="yamnet", class_names=yamnet)
    top = tmp_path / "top.jsonl"
    CliRunner().invoke(main, ["batch", str(folder), "--model", "debug", "--out", str(top), "--top-k", "1", "--top-scores", "0",
                              "--workers", "0"])
    with pytest.raises(OutputError, match="--all-scores"):
        read_all_scores(top, model="debug", class_names=get_spec("debug").class_names)


def test_local_engine_parquet_resumes_after_kill(folder, tmp_path):
    """The local engine killed (SIGKILL) mid-run leaves complete parts only; --resume completes it, each file once."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "calitag.cli", "batch", str(folder), "--model", "debug", "--device", "cpu",
           "--format", "parquet", "--out", str(out), "--rows-per-part", "4", "--workers", "0"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(out.glob("part-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    (out / ".part-killed-00009.parquet.tmp").write_bytes(b"PAR1 half a part")  # as a kill mid-write leaves it
    done = len(_parquet_records(out))
    assert 0 < done < 47, "the run was not killed mid-way"
    result = CliRunner().invoke(main, ["batch", str(folder), "--model", "debug", "--device", "cpu", "--format",
                                       "parquet", "--out", str(out), "--workers", "0", "--resume"])
    assert f"{done} of 47 file(s) already" in result.stderr
    assert sorted(_part_paths(out)) == sorted(str(p) for p in folder.glob("*.wav"))


def test_missing_ray_names_the_extra(monkeypatch):
    """Without Ray installed, --engine ray fails with one line naming the calitag[ray] extra."""
    from calitag.pipeline.ray_engine import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependencyError, match=r"the ray extra.*pip install -e \"\.\[ray\]\""):
        import_ray()


def test_sources_from_a_list_file_and_a_file_uri(folder, tmp_path):
    """A text file of paths and a file:// URI list the same files as the folder."""
    from calitag.pipeline.batch import list_sources

    files = list_sources(folder)
    listing = tmp_path / "files.txt"
    listing.write_text("# clips\n" + "\n".join(files) + "\n\n")
    assert list_sources(listing) == files == list_sources(f"file://{folder}")
    assert len(files) == 47


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_join_a_started_head_and_resume_a_killed_job(folder, tmp_path):
    """`--address` joins a head from `ray start`; a job killed there is completed by --resume, each file once."""
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray_cli is None:
        pytest.skip("the `ray` command is not on PATH")
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="calitag-ray-")  # short: Ray's socket paths have a length limit
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}  # a throw-away cluster on this machine
    # --block keeps `ray start` in the foreground: the head's processes stay in this process group,
    # which is stopped by its id at the end (`ray stop` would stop every Ray on the machine).
    head = subprocess.Popen(
        [ray_cli, "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        out = tmp_path / "out"
        cmd = [sys.executable, "-m", "calitag.cli", "batch", str(folder), "--engine", "ray", "--address",
               f"127.0.0.1:{port}", "--model", "debug", "--out", str(out), "--rows-per-part", "8",
               "--cpus-per-actor", "0.5"]
        deadline = time.monotonic() + 120
        while subprocess.run([ray_cli, "status", f"--address=127.0.0.1:{port}"], env=env,
                             capture_output=True).returncode != 0:
            assert head.poll() is None and time.monotonic() < deadline, "the Ray head did not start"
            time.sleep(1)
        log = tmp_path / "first.log"
        with log.open("w") as stderr:
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 180
        while not list(out.glob("part-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        done = len(_part_paths(out))
        assert 0 < done < 47, f"the job was not killed mid-way ({done} done): {log.read_text()[-2000:]}"
        resumed = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=180)
        assert resumed.returncode == 1, resumed.stderr  # the two bad files
        assert f"{done} of 47 file(s) already" in resumed.stderr
        assert sorted(_part_paths(out)) == sorted(str(p) for p in folder.glob("*.wav"))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)
