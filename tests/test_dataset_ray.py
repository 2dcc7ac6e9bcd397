"""Ray Data end to end on a real local Ray (`ray.init(num_cpus=2)`): the `QualiCLIPScorer` actor class in
`map_batches`, and `dataset score --ray`; the same images scored as files, as tar shards and through Ray give the
same scores. Ray starts once for the module (its start-up is most of the time)."""

from __future__ import annotations

import os

import pytest

ray = pytest.importorskip("ray", reason="the `data` extra (.ci/run installs it)")

from cli_support import jsonl_rows, run_cli  # noqa: E402
from dataset_support import image_set, read_output, write_tar  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    # No token file in the real home (~/.ray): a local test cluster needs no authentication.
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=str(tmp_path_factory.mktemp("ray")), runtime_env={"env_vars": {"QUALICLIP_OFFLINE": "1"}})
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()
    if saved is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = saved


def test_one_number_three_paths(tmp_path, tiny_weights_file, local_ray):
    from ray.data import ActorPoolStrategy

    from qualiclip_cli.ray import ADDED_COLUMNS, QualiCLIPScorer

    images = image_set(tmp_path / "files")
    keys = sorted(images)
    write_tar(tmp_path / "shards" / "000000.tar", [(f"{k}.jpg", images[k]) for k in keys[:2]])
    write_tar(tmp_path / "shards" / "000001.tar", [(f"{k}.jpg", images[k]) for k in keys[2:]] + [("bad.jpg", b"x")])

    files = run_cli("score", tmp_path / "files", "-f", "jsonl", "--full-precision", "--no-cache",
                    "--weights", tiny_weights_file)
    assert files.exit_code == 0, files.stderr
    by_file = {os.path.basename(r["path"])[:-4]: r["score"] for r in jsonl_rows(files.stdout)}

    shards = run_cli("dataset", "score", f"{tmp_path}/shards/{{000000..000001}}.tar", "--out", tmp_path / "plain",
                     "--weights", tiny_weights_file)
    assert shards.exit_code == 3, shards.stderr

    # The actor class in the user's own pipeline: bytes in, every other column kept, a bad row an error row.
    rows = [{"__key__": k, "caption": f"c{k}", "bytes": images[k]} for k in keys]
    rows.append({"__key__": "broken", "caption": "c", "bytes": b"not an image"})
    scored = local_ray.data.from_items(rows).map_batches(
        QualiCLIPScorer, fn_constructor_kwargs={"weights": str(tiny_weights_file), "offline": True}, batch_size=2,
        compute=ActorPoolStrategy(size=1), batch_format="numpy").take_all()
    by_ray = {row["__key__"]: row for row in scored}
    assert sorted(by_ray) == sorted([*keys, "broken"])
    assert set(by_ray["broken"]) == {"__key__", "caption", *ADDED_COLUMNS}
    assert by_ray["broken"]["status"] == "error" and "not an image" in by_ray["broken"]["error"]
    assert by_ray[keys[0]]["caption"] == f"c{keys[0]}" and by_ray[keys[0]]["status"] == "ok"

    # dataset score --ray: the same outputs as without Ray.
    on_ray = run_cli("dataset", "score", f"{tmp_path}/shards/*.tar", "--out", tmp_path / "ray", "--ray",
                     "--actors", "1", "--weights", tiny_weights_file)
    assert on_ray.exit_code == 3, on_ray.stderr
    plain = {**read_output(tmp_path / "plain" / "000000.parquet"), **read_output(tmp_path / "plain" / "000001.parquet")}
    through = {**read_output(tmp_path / "ray" / "000000.parquet"), **read_output(tmp_path / "ray" / "000001.parquet")}
    assert list(read_output(tmp_path / "ray" / "000001.parquet")) == [*keys[2:], "bad"]  # the shard's order
    assert through["bad"]["status"] == plain["bad"]["status"] == "error"
    assert through["bad"]["error"] == plain["bad"]["error"]
    for key in keys:
        assert plain[key]["score"] == pytest.approx(by_file[key], abs=1e-6)
        assert by_ray[key]["score"] == pytest.approx(by_file[key], abs=1e-6)
        assert through[key]["score"] == pytest.approx(by_file[key], abs=1e-6)
        assert through[key]["identity"] == plain[key]["identity"]
    # Resumable on Ray too.
    again = run_cli("dataset", "score", f"{tmp_path}/shards/*.tar", "--out", tmp_path / "ray", "--ray",
                    "--weights", tiny_weights_file)
    assert again.exit_code == 0 and again.stdout.count("skipped\t") == 2  # nothing scored this time: nothing failed
