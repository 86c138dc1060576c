"""build-data for real datasets: every --format on small generated trees (with corrupt files and an
object without cameras), splits, rooms, rejected.txt, resumable/sharded/parallel builds that give
the same bytes, --verify, the readers of every kind and the embeddings rows table."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from simtool.data.builders import build_dataset, resolve_build_spec
from simtool.data.builders._prepare import prepare_image
from simtool.data.builders.parts import BuildContext, cut_parts, work_dir
from simtool.errors import UserError
from simtool.formats.dataset_dir import Dataset, verify_dataset
from simtool.formats.image_store import ImageStore
from tests.conftest import cli

RNG = np.random.default_rng(0)


def jpeg(w=24, h=18, seed=None) -> bytes:
    rng = np.random.default_rng(seed) if seed is not None else RNG
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png(w=16, h=12, seed=None) -> bytes:
    rng = np.random.default_rng(seed) if seed is not None else RNG
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def build(fmt, out, src=None, warn=None, shard=None, merge=False, sets=None, **options):
    spec = resolve_build_spec(fmt, str(out), str(src) if src else None, sets=sets, options={f"--{k.replace('_', '-')}": v for k, v in options.items()})
    return build_dataset(spec, ctx=BuildContext(shard=shard, merge_only=merge, warn=warn))


def rejected(out) -> dict[str, str]:
    lines = (Path(out) / "rejected.txt").read_text().splitlines()
    return dict(line.split("\t", 1) for line in lines)


def table(out, name):
    return pq.read_table(Path(out) / name).to_pydict()


def store_bytes(out) -> list[bytes]:
    store = ImageStore(Path(out) / "images.h5", 8)
    return [store.encoded(i) for i in range(len(store))]


# -- mvimgnet -----------------------------------------------------------------------------------


def make_mvimgnet(root: Path, cameras_everywhere=False) -> dict:
    """Two archives, categories 3 (10 objects) and 7 (6 objects), a few broken things; returns what to expect."""
    root.mkdir(parents=True)
    (root / "mvimgnet_category.txt").write_text("id,name\n3,mug\n7,shoe\n")
    frames = {}
    for c, n_obj in ((3, 10), (7, 6)):
        for o in range(n_obj):
            part = f"mvi_0{o % 2}"
            name = f"{'ab'[c == 7]}{o:02d}"
            obj = root / part / str(c) / name
            (obj / "images").mkdir(parents=True)
            names = ["1.jpg", "2.jpg", "10.jpg"] if o == 0 else [f"{f:03d}.jpg" for f in range(4)]
            for k, f in enumerate(names):
                (obj / "images" / f).write_bytes(jpeg(60, 40, seed=c * 1000 + o * 10 + k))
            frames[(c, name)] = names
            if cameras_everywhere or not (c == 7 and o in (3, 4)):
                (obj / "sparse" / "0").mkdir(parents=True)
                (obj / "sparse" / "0" / "cameras.bin").write_bytes(b"\1" * 8)
            elif o == 3:
                (obj / "sparse" / "0").mkdir(parents=True)  # empty reconstruction
    (root / "mvi_01" / "3" / "a01" / "images" / "001.jpg").write_bytes(b"not a jpeg at all")
    good = (root / "mvi_00" / "7" / "b02" / "images" / "002.jpg").read_bytes()
    (root / "mvi_00" / "7" / "b02" / "images" / "002.jpg").write_bytes(good[: len(good) // 2])
    (root / "mvi_00" / "3" / "a02" / "images" / "notes.txt").write_text("hello")
    (root / "mvi_01" / "7" / "b05" / "images" / "000.jpg").unlink()
    for f in (root / "mvi_01" / "7" / "b05" / "images").iterdir():
        f.unlink()  # an object with no frames
    return frames


def test_mvimgnet_tree(tmp_path):
    src = tmp_path / "src"
    make_mvimgnet(src)
    rooms = tmp_path / "rooms.json"
    rooms.write_text(json.dumps({"kitchen": [3], "garage": [7], "Uncertain": [1]}))
    warnings = []
    info = build("mvimgnet", tmp_path / "d", src, warn=warnings.append, require_cameras=True, rooms=str(rooms), max_side=30)
    ds = Dataset(tmp_path / "d")
    rej = rejected(tmp_path / "d")
    assert rej.keys() == {"mvi_01/7/b03", "mvi_00/7/b04", "mvi_01/7/b05", "mvi_01/3/a01/images/001.jpg",
                          "mvi_00/7/b02/images/002.jpg", "mvi_00/3/a02/images/notes.txt"}
    assert "camera" in rej["mvi_01/7/b03"] and "camera" in rej["mvi_00/7/b04"] and "no frames" in rej["mvi_01/7/b05"]
    assert any("truncated" in w or "not a readable image" in w for w in warnings)
    counts = ds.card["counts"]
    assert counts["objects_without_cameras"] == 2 and counts["rejected_files"] == 3 and counts["objects_without_frames"] == 1
    assert info["rejected"] == 6
    # rows: 10 + 3 objects with 4 frames (a00 has 3), minus the 3 bad files
    assert len(ds) == (10 * 4 - 1) + 3 * 4 - 3 == counts["images"]
    frames = table(tmp_path / "d", "frames.parquet")
    assert list(frames) == ["category", "object", "frame", "length", "partition", "split", "index", "path"]
    assert set(ds.object_names) == {f"a{o:02d}" for o in range(10)} | {"b00", "b01", "b02"}
    assert ds.category_names[3] == "mug" and ds.category_names[7] == "shoe" and ds.n_categories == 8
    # frames are 0..length-1 per object (broken frames closed up), numerically sorted by file name
    for name in set(ds.object_names):
        m = ds.object_names == name
        assert sorted(ds.frame[m].tolist()) == list(range(m.sum())) and set(np.asarray(frames["length"])[m]) == {m.sum()}
        assert len(set(ds.split[m])) == 1 and len(set(np.asarray(frames["partition"])[m])) == 1
    a00 = [p for p, o in zip(frames["path"], frames["object"]) if o == "a00"]
    assert a00 == ["mvi_00/3/a00/images/1.jpg", "mvi_00/3/a00/images/2.jpg", "mvi_00/3/a00/images/10.jpg"]
    assert frames["partition"][frames["object"].index("a01")] == "mvi_01"
    # the original split: the 9th object (index 8) of a category is val, the 10th test
    split_of = {o: s for o, s in zip(ds.object_names, ds.split)}
    assert split_of["a08"] == "val" and split_of["a09"] == "test" and all(split_of[f"a{o:02d}"] == "train" for o in range(8))
    assert all(split_of[o] == "train" for o in ("b00", "b01", "b02"))
    # rooms: the semantic assignment as given, a random control with the same room sizes
    assert json.loads((tmp_path / "d" / "room_assignment_balanced.json").read_text()) == json.loads(rooms.read_text())
    random = json.loads((tmp_path / "d" / "room_assignment_random.json").read_text())
    assert sorted(len(v) for k, v in random.items() if k != "Uncertain") == [1, 1] and random["Uncertain"] == [1]
    assert ds.room_assignments == ["semantic", "random"]
    # resized: longer side 30, aspect ratio kept, JPEG
    with Image.open(io.BytesIO(ds.images(8).encoded(0))) as img:
        assert img.size == (30, 20) and img.format == "JPEG"
    assert verify_dataset(tmp_path / "d")[1] == []


def test_mvimgnet_keeps_bytes_fractions_only_rooms(tmp_path):
    src = tmp_path / "src"
    make_mvimgnet(src, cameras_everywhere=True)
    rooms = tmp_path / "rooms.json"
    rooms.write_text(json.dumps({"kitchen": [3], "garage": [1], "Uncertain": [7]}))
    build("mvimgnet", tmp_path / "d", src, max_side=0, split="0.5,0.25,0.25", rooms=str(rooms), sets=["mvimgnet.only_rooms=true"], seed=4)
    ds = Dataset(tmp_path / "d")
    assert set(ds.category.tolist()) == {3} and ds.card["counts"]["categories_without_room"] == 1
    # --max-side 0: the stored bytes are the source files' bytes
    paths = table(tmp_path / "d", "frames.parquet")["path"]
    store = ds.images(8)
    for i, p in zip(ds.index, paths):
        assert store.encoded(i) == (src / p).read_bytes()
    # seeded fractions of the 10 objects (round(2.5) = 2 for val and test), never an object in two splits
    per = {s: len(set(ds.object_names[ds.split == s])) for s in ("train", "val", "test")}
    assert per == {"train": 6, "val": 2, "test": 2} and len(set(ds.object_names)) == 10


def test_mvimgnet_errors(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "x.jpg").write_bytes(jpeg())
    for args, needle in [
        (["--format", "mvimgnet", tmp_path / "missing", "--out", tmp_path / "o"], "does not exist"),
        (["--format", "mvimgnet", tmp_path / "flat", "--out", tmp_path / "o"], "does not look like an MVImgNet tree"),
        (["--format", "mvimgnet", "--out", tmp_path / "o"], "reads SRC"),
        (["--format", "nope", "--out", tmp_path / "o"], "Unknown --format"),
        (["--format", "mvimgnet", tmp_path / "flat", "--out", tmp_path / "o", "--kind", "directed"], "--kind does not apply to --format mvimgnet"),
        (["--format", "icdl", tmp_path / "flat", "--out", tmp_path / "o"], "does not look like the ICDL files"),
        (["--format", "cars", tmp_path / "flat", "--out", tmp_path / "o"], "cars_annos.mat is missing"),
        (["--format", "triplets", "--out", tmp_path / "o", "--kind", "directed"], "needs --triplets"),
        (["--format", "triplets", "--preset", "things", tmp_path / "flat", "--out", tmp_path / "o"], "does not look like THINGS"),
        (["--format", "mvimgnet", tmp_path / "flat", "--out", tmp_path / "o", "--shard", "3/2"], "--shard"),
        (["--format", "toyworld", "--out", tmp_path / "o", "--shard", "0/2"], "--shard and --merge apply"),
    ]:
        result = cli("build-data", *args)
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.output and "Traceback" not in result.output, (args, result.output)
    assert not (tmp_path / "o").exists() and not work_dir(tmp_path / "o").exists()


# -- same bytes whatever the route: workers, shards, interruption ---------------------------------------


def _same_dataset(a, b) -> None:
    da, db = Dataset(a), Dataset(b)
    assert da.fingerprint == db.fingerprint
    assert table(a, "frames.parquet") == table(b, "frames.parquet")
    assert store_bytes(a) == store_bytes(b)
    assert (Path(a) / "rejected.txt").read_text() == (Path(b) / "rejected.txt").read_text()


def test_workers_and_shards_give_the_same_dataset(tmp_path):
    src = tmp_path / "src"
    make_mvimgnet(src)
    common = dict(require_cameras=True, max_side=30, part_size=5)
    build("mvimgnet", tmp_path / "one", src, workers=1, **common)
    build("mvimgnet", tmp_path / "two", src, workers=2, **common)
    _same_dataset(tmp_path / "one", tmp_path / "two")
    # two shards (by partition: mvi_00, mvi_01), then a merge
    info = build("mvimgnet", tmp_path / "sh", src, shard=(0, 2), **common)
    assert "shard 0/2" in info["message"] and not (tmp_path / "sh").exists()
    with pytest.raises(UserError, match="not built yet"):
        build("mvimgnet", tmp_path / "sh", src, merge=True, **common)
    build("mvimgnet", tmp_path / "sh", src, shard=(1, 2), **common)
    build("mvimgnet", tmp_path / "sh", src, merge=True, **common)
    assert not work_dir(tmp_path / "sh").exists()
    _same_dataset(tmp_path / "one", tmp_path / "sh")
    # a finished build is not overwritten; other options than the unfinished build's are refused
    with pytest.raises(UserError, match="already exists"):
        build("mvimgnet", tmp_path / "sh", src, **common)
    build("mvimgnet", tmp_path / "x", src, shard=(0, 2), **common)
    with pytest.raises(UserError, match="other options"):
        build("mvimgnet", tmp_path / "x", src, shard=(1, 2), require_cameras=True, max_side=31, part_size=5)


def test_cut_parts_never_split_a_group_or_partition():
    rng = np.random.default_rng(1)
    group = np.repeat(np.arange(40), rng.integers(1, 9, 40))
    partition = np.repeat(np.arange(4), [10, 10, 10, 10])[group]
    parts = cut_parts(group, partition, 12)
    assert parts[0][0] == 0 and parts[-1][1] == len(group)
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    for s, e in parts:
        assert len(set(partition[s:e])) == 1
        assert s == 0 or group[s] != group[s - 1]
        assert (e - s) < 12 + 8 or len(set(group[s:e])) == 1


def test_interrupted_build_resumes_to_the_same_dataset(tmp_path):
    """SIGINT (to the whole process group, like Ctrl-C) half-way, then the same command again."""
    src = tmp_path / "src"
    for o in range(90):
        d = src / str(o % 3) / f"o{o:03d}" / "images"
        d.mkdir(parents=True)
        for f in range(3):
            (d / f"{f}.png").write_bytes(png(20, 14, seed=o * 7 + f))
    (src / "1" / "o001" / "images" / "1.png").write_bytes(b"broken")
    args = ["build-data", "--format", "mvimgnet", str(src), "--out", str(tmp_path / "d"), "--max-side", "10",
            "--set", "part_size=3", "--split", "0.6,0.2,0.2"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "simtool", *args, "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, env=env, cwd=tmp_path)
    parts = work_dir(tmp_path / "d") / "parts"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if parts.is_dir() and len([p for p in parts.iterdir() if not p.name.startswith(".")]) >= 4:
            break
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 130, output
    assert "run the same command again" in output
    assert not (tmp_path / "d").exists(), "an interrupted build leaves no dataset"
    finished = [p for p in parts.iterdir() if not p.name.startswith(".")]
    assert 4 <= len(finished) < 90, "interrupted half-way"
    assert not [p for p in parts.iterdir() if p.name.startswith(".")], "no half-written part left behind"
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert "Resuming" in result.output
    cli(*args[:5], str(tmp_path / "fresh"), *args[6:])
    _same_dataset(tmp_path / "d", tmp_path / "fresh")
    assert not work_dir(tmp_path / "d").exists()


# -- icdl ----------------------------------------------------------------------------------------


def make_icdl(root: Path, with_partition=True, with_val=True) -> None:
    root.mkdir(parents=True)
    rows = {"train": [], "val": [], "test": []}
    with h5py.File(root / "data_all.h5", "w") as fh:
        for p in ("mvi_00", "mvi_01"):
            for c in (5, 9):
                for o in range(2):
                    obj = f"{p[-1]}{c}{o}"
                    n = 3
                    data = [np.frombuffer(jpeg(seed=hash((p, c, o, f)) % 1000), dtype=np.uint8) for f in range(n)]
                    if (p, c, o) == ("mvi_00", 5, 1):
                        data[1] = np.frombuffer(b"junk junk", dtype=np.uint8)
                    key = f"{p}/{c}/{obj}" if with_partition else f"{c}/{obj}"
                    ds = fh.create_dataset(key, (n,), dtype=h5py.vlen_dtype(np.uint8))
                    for f in range(n):
                        ds[f] = data[f]
                    split = "test" if o == 1 and p == "mvi_01" else "val" if o == 1 else "train"
                    for f in range(n):
                        rows[split].append({"category": c, "object": obj, "frame": f, "length": n, "partition": p})
        rows["train"].append({"category": 9, "object": "ghost", "frame": 0, "length": 1, "partition": "mvi_00"})
    for split in ("train", "val", "test"):
        if split == "val" and not with_val:
            continue
        pq.write_table(pa.Table.from_pylist(rows[split]), root / f"dataset_{split}_all3.parquet")


@pytest.mark.parametrize("with_partition", [True, False])
def test_icdl_import(tmp_path, with_partition):
    make_icdl(tmp_path / "src", with_partition)
    build("icdl", tmp_path / "d", tmp_path / "src", max_side=0)
    ds = Dataset(tmp_path / "d")
    rej = rejected(tmp_path / "d")
    assert len(rej) == 2 and any("ghost" in k and "missing" in v for k, v in rej.items())
    assert any("051" in k and "#1" in k for k in rej)
    assert len(ds) == 2 * 2 * 2 * 3 - 1
    assert set(ds.split) == {"train", "val", "test"} and set(ds.category.tolist()) == {5, 9}
    m = ds.object_names == "051"
    assert sorted(ds.frame[m].tolist()) == [0, 1]
    # the stored bytes are the HDF5 bytes
    with h5py.File(tmp_path / "src" / "data_all.h5", "r") as fh:
        i = int(np.flatnonzero((ds.object_names == "190") & (ds.frame == 2))[0])
        key = "mvi_01/9/190" if with_partition else "9/190"
        assert ds.images(8).encoded(ds.index[i]) == fh[key][2].tobytes()


# -- classes ----------------------------------------------------------------------------------------


def test_imagefolder_class_split_and_split_folders(tmp_path):
    src = tmp_path / "src"
    for c in range(6):
        d = src / f"class{c}"
        (d / "sub").mkdir(parents=True)
        for i in range(3):
            (d / f"{i}.jpg").write_bytes(jpeg(seed=c * 10 + i))
        (d / "sub" / "x.png").write_bytes(png(seed=c))
    (src / "class2" / "readme.txt").write_text("not an image")
    (src / "class2" / ".DS_Store").write_bytes(b"\0")
    build("imagefolder", tmp_path / "d", src, split="0.5,0.5", seed=3)
    ds = Dataset(tmp_path / "d")
    assert ds.kind == "classes" and len(ds) == 6 * 4 and ds.class_names == [f"class{c}" for c in range(6)]
    assert rejected(tmp_path / "d") == {"class2/readme.txt": "not an image (Pillow cannot identify the file)"}
    train, test = set(ds.cls[ds.split == "train"]), set(ds.cls[ds.split == "test"])
    assert len(train) == 3 and len(test) == 3 and not train & test, "class-disjoint halves"
    assert list(table(tmp_path / "d", "images.parquet")) == ["class", "split", "index", "path"]
    assert ds.ids(np.arange(2)).tolist() == ["class0/0.jpg", "class0/1.jpg"]
    assert ds.labels(np.arange(3))["class"].tolist() == [0, 0, 0]
    # a split level
    lvl = tmp_path / "lvl"
    for split in ("train", "validation", "test"):
        for c in ("cat", "dog"):
            (lvl / split / c).mkdir(parents=True)
            (lvl / split / c / "a.jpg").write_bytes(jpeg())
    build("imagefolder", tmp_path / "e", lvl)
    e = Dataset(tmp_path / "e")
    assert sorted(e.split.tolist()) == ["test"] * 2 + ["train"] * 2 + ["val"] * 2 and e.class_names == ["cat", "dog"]


def make_cub(root: Path) -> Path:
    """CUB as downloaded: classes 1, 100 (train), 101, 200 (test); images.txt order and classes.txt names."""
    cub = root / "CUB_200_2011"
    lines, labels = [], []
    for k, (num, name) in enumerate([(1, "Albatross"), (100, "Wren"), (101, "Tern"), (200, "Yellowthroat")], 1):
        folder = cub / "images" / f"{num:03d}.{name}"
        folder.mkdir(parents=True)
        (folder / "a.jpg").write_bytes(jpeg(seed=k))
        lines.append(f"{k} {num:03d}.{name}/a.jpg")
        labels.append(f"{k} {num}")
    (cub / "images.txt").write_text("\n".join(lines) + "\n")
    (cub / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (cub / "classes.txt").write_text("".join(f"{i} {i:03d}.C{i}\n" for i in range(1, 201)))
    return root


def make_cars(cars: Path) -> Path:
    """Cars196: cars_annos.mat (read with scipy) with classes 1, 98 (train), 99, 196 (test)."""
    from scipy.io import savemat

    (cars / "car_ims").mkdir(parents=True)
    ann = np.zeros(4, dtype=[("relative_im_path", object), ("class", object), ("test", object)])
    for i, c in enumerate([1, 98, 99, 196]):
        (cars / "car_ims" / f"{i:06d}.jpg").write_bytes(jpeg(seed=50 + i))
        ann[i] = (f"car_ims/{i:06d}.jpg", np.uint8(c), np.uint8(0))
    names = np.array([f"Car {i}" for i in range(1, 197)], dtype=object)
    savemat(cars / "cars_annos.mat", {"annotations": ann.reshape(1, -1), "class_names": names.reshape(1, -1)})
    return cars


def make_sop(root: Path) -> Path:
    """Stanford Online Products: Ebay_train.txt / Ebay_test.txt with super classes."""
    sop = root / "Stanford_Online_Products"
    rows = {"train": [(1, 1, 1, "bicycle_final/111_0.JPG"), (2, 1, 1, "bicycle_final/111_1.JPG"), (3, 2, 2, "chair_final/222_0.JPG")],
            "test": [(4, 3, 1, "bicycle_final/333_0.JPG")]}
    for split, rs in rows.items():
        for _, _, _, p in rs:
            (sop / p).parent.mkdir(parents=True, exist_ok=True)
            (sop / p).write_bytes(jpeg(seed=len(p)))
        (sop / f"Ebay_{split}.txt").write_text("image_id class_id super_class_id path\n" + "".join(f"{a} {b} {c} {d}\n" for a, b, c, d in rs))
    return root


def test_cub_cars_sop(tmp_path):
    make_cub(tmp_path / "dl")
    build("cub", tmp_path / "cub", tmp_path / "dl")
    ds = Dataset(tmp_path / "cub")
    assert ds.cls.tolist() == [0, 99, 100, 199] and ds.split.tolist() == ["train", "train", "test", "test"]
    assert len(ds.class_names) == 200 and ds.class_names[0] == "C1"
    cars = make_cars(tmp_path / "cars")
    build("cars", tmp_path / "c", cars)
    c = Dataset(tmp_path / "c")
    assert c.cls.tolist() == [0, 97, 98, 195] and c.split.tolist() == ["train", "train", "test", "test"] and c.class_names[98] == "Car 99"
    make_sop(tmp_path)
    build("sop", tmp_path / "s", tmp_path)
    s = Dataset(tmp_path / "s")
    assert s.cls.tolist() == [0, 0, 1, 2] and s.superclass.tolist() == [0, 0, 1, 0] and s.split.tolist() == ["train"] * 3 + ["test"]
    assert s.card["superclass_names"] == ["bicycle", "chair"] and s.class_names[1] == "chair_final/222"
    assert s.labels(np.arange(4))["superclass"].tolist() == [0, 0, 1, 0]


# -- triplets -------------------------------------------------------------------------------------


def reference_clean(lines, known, kind):
    """Brute force: drop unknown ids, repeated ids, repeated judgements (odd-one-out pair unordered)."""
    out, seen, counts = [], set(), {"unknown_item": 0, "self": 0, "duplicate": 0}
    for t in lines:
        if any(x not in known for x in t):
            counts["unknown_item"] += 1
        elif len(set(t)) < 3:
            counts["self"] += 1
        else:
            key = (frozenset(t[:2]), t[2]) if kind == "odd-one-out" else tuple(t)
            if key in seen:
                counts["duplicate"] += 1
            else:
                seen.add(key)
                out.append(t)
    return out, counts


@pytest.mark.parametrize("kind", ["odd-one-out", "directed"])
def test_triplets_generic_matches_brute_force(tmp_path, kind):
    rng = np.random.default_rng(5)
    ids = [str(i) for i in range(12)]
    lines = [tuple(str(x) for x in rng.integers(0, 14, 3)) for _ in range(400)]  # 12, 13 are unknown
    lines += [lines[0], (lines[1][1], lines[1][0], lines[1][2])]  # an exact and a swapped-pair repeat
    text = "anchor;closer;farther\n" + "".join(f"{a}, {b} ;{c}\n" if i % 3 else f"{a} {b} {c}\n" for i, (a, b, c) in enumerate(lines)) + "1 2\n"
    (tmp_path / "t.csv").write_text(text)
    (tmp_path / "items.tsv").write_text("word\tcode\n" + "".join(f"w{i}\tc{i}\n" for i in ids))
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in ids[:8]:
        (imgs / f"{i}.jpg").write_bytes(jpeg(seed=int(i)))
    (imgs / "3.jpg").write_bytes(b"corrupt")
    (imgs / "99.jpg").write_bytes(jpeg())  # no such item
    build("triplets", tmp_path / "d", triplets=[str(tmp_path / "t.csv")], kind=kind, images=str(imgs), items=str(tmp_path / "items.tsv"))
    ds = Dataset(tmp_path / "d")
    want, counts = reference_clean(lines, set(ids), kind)
    assert ds.triplets.tolist() == [[int(x) for x in t] for t in want]
    dropped = ds.card["dropped"]
    assert {k: dropped[k] for k in counts} == counts and dropped["header"] == 1 and dropped["malformed"] == 1
    assert ds.card["counts"]["triplets"] == len(want) and set(ds.triplet_kind) == {kind}
    assert ds.item_ids.tolist() == ids and ds.item_names.tolist() == [f"w{i}" for i in ids]
    assert ds.item_index.tolist()[:8] == [0, 1, 2, -1, 3, 4, 5, 6] and (ds.item_index[8:] == -1).all()
    assert rejected(tmp_path / "d") == {"99.jpg": "no item with this id in the items file", "3.jpg": "not an image (Pillow cannot identify the file)"}
    n = len(want)
    assert (ds.triplet_split == "test").sum() == round(0.1 * n) and (ds.triplet_split == "train").sum() == n - round(0.1 * n)
    assert len(ds.rows("test")) == 12, "split by triplet: every item is in every split"
    assert ds.labels(ds.rows("test"))["item"].tolist() == list(range(12))
    cols = table(tmp_path / "d", "items.parquet")
    assert list(cols) == ["item", "id", "name", "index", "split"] and list(table(tmp_path / "d", "triplets.parquet")) == ["a", "b", "c", "kind", "split"]


def test_triplets_split_by_item_keeps_every_triplet_and_records_where_its_items_lie(tmp_path):
    rng = np.random.default_rng(2)
    lines = [tuple(rng.choice(30, 3, replace=False)) for _ in range(500)]
    (tmp_path / "t.txt").write_text("".join(f"{a} {b} {c}\n" for a, b, c in lines))
    build("triplets", tmp_path / "d", triplets=[str(tmp_path / "t.txt")], kind="directed", split_by="item", split="0.6,0.2,0.2", seed=1)
    ds = Dataset(tmp_path / "d")
    assert ds.item_ids.tolist() == natural(set(str(x) for t in lines for x in t)) and (ds.item_index == -1).all()
    assert len(ds.images(8)) == 0, "a triplets dataset without pictures"
    s = ds.item_split
    assert sorted(np.unique(s, return_counts=True)[1].tolist()) == [6, 6, 18]
    item_of = {i: k for k, i in enumerate(ds.item_ids)}
    ref = [t for t in ((item_of[str(a)], item_of[str(b)], item_of[str(c)]) for a, b, c in dict.fromkeys(lines))]
    assert ds.triplets.tolist() == [list(t) for t in ref], "every triplet is kept (the generic default drops repeats)"
    want = [s[a] if s[a] == s[b] == s[c] else "" for a, b, c in ref]
    assert ds.triplet_split.tolist() == want, "a triplet's split is the one its three items share, else empty"
    assert "cross_split" not in ds.card["dropped"]
    parts = ds.card["layout"]["parts"]
    learn = [all(s[x] in ("train", "val") for x in t) for t in ref]
    assert parts["train+val_triplets"] == sum(learn) and parts["test_triplets"] == want.count("test")
    assert parts["mixed_train_val_triplets"] == sum(ok and w == "" for ok, w in zip(learn, want))
    assert parts["touching_test_triplets"] == len(ref) - sum(learn) - want.count("test")
    assert set(ds.rows("val").tolist()) == set(np.flatnonzero(s == "val").tolist())
    assert ds.card["split_by"] == "item" and ds.card["layout"]["fractions"] == [0.6, 0.2, 0.2]
    assert set(ds.triplets_among(["train", "val"]).tolist()) == {i for i, ok in enumerate(learn) if ok}


def natural(ids):
    return sorted(ids, key=int)


def test_things_yummly_ihsj_presets(tmp_path):
    from scipy.io import savemat

    # THINGS: concepts tsv, concept folders with several images, two triplet files, sortind remap
    th = tmp_path / "things"
    (th / "Main").mkdir(parents=True)
    concepts = ["aardvark", "abacus", "accordion", "acorn"]
    (th / "Main" / "things_concepts.tsv").write_text("Word\tuniqueID\n" + "".join(f"{c.title()}\t{c}\n" for c in concepts))
    for k, c in enumerate(concepts[:3]):
        (th / "Main" / c).mkdir()
        for j in range(2):
            (th / "Main" / c / f"{c}_{j}.jpg").write_bytes(jpeg(seed=k * 2 + j))
    (th / "Main" / "abacus" / "abacus_0.jpg").write_bytes(b"broken")
    (th / "Revealing" / "triplets").mkdir(parents=True)
    (th / "Revealing" / "triplets" / "data1854_baseline_train90.txt").write_text("0 1 2\n1 2 3\n")
    (th / "Revealing" / "triplets" / "data1854_baseline_test10.txt").write_text("3 0 1\n")
    (th / "Revealing" / "variables").mkdir(parents=True)
    sortind = np.array([2, 1, 4, 3])  # position p holds file id sortind[p]-1
    savemat(th / "Revealing" / "variables" / "sortind.mat", {"sortind": sortind.reshape(-1, 1)})
    build("triplets", tmp_path / "t", th, preset="things")
    t = Dataset(tmp_path / "t")
    pos = {int(s) - 1: p for p, s in enumerate(sortind)}
    assert t.triplets.tolist() == [[pos[0], pos[1], pos[2]], [pos[1], pos[2], pos[3]], [pos[3], pos[0], pos[1]]]
    assert set(t.triplet_kind) == {"odd-one-out"} and t.item_names.tolist() == concepts
    it, ix = t.item_images
    assert it.tolist() == [0, 0, 1, 2, 2] and t.item_index.tolist() == [0, 2, 3, -1]
    # Yummly: images/<uuid>.jpg, ';'-separated images/<uuid>.jpg cells, names from ingredients.json
    ym = tmp_path / "food100"
    (ym / "images").mkdir(parents=True)
    uu = ["0a1b", "2c3d", "4e5f", "6a7b"]
    for k, u in enumerate(uu):
        (ym / "images" / f"{u}.jpg").write_bytes(jpeg(seed=40 + k))
    (ym / "all-triplets.csv").write_text("images/0a1b.jpg; images/2c3d.jpg; images/4e5f.jpg\nimages/6a7b.jpg;images/0a1b.jpg;images/6a7b.jpg\n")
    (ym / "ingredients.json").write_text(json.dumps({"0a1b.jpg": {"name": "Soup"}, "2c3d.jpg": None}))
    build("triplets", tmp_path / "y", ym, preset="yummly")
    y = Dataset(tmp_path / "y")
    assert y.triplets.tolist() == [[0, 1, 2]] and y.card["dropped"]["self"] == 1 and y.item_names.tolist() == ["Soup", "", "", ""]
    assert set(y.triplet_kind) == {"directed"} and (y.item_index >= 0).all()
    # IHSJ: psiz catalogue + observations, read with h5py: 12 directed triplets per 8-choose-2 trial
    ih = tmp_path / "ihsj"
    (ih / "val" / "catalogs").mkdir(parents=True)
    (ih / "val" / "obs").mkdir(parents=True)
    (ih / "imagenet" / "validation").mkdir(parents=True)
    n_stim = 20
    with h5py.File(ih / "val" / "catalogs" / "catalog.hdf5", "w") as fh:
        fh["stimulus_id"] = np.arange(n_stim)
        fh["stimulus_filepath"] = np.array([f"n01/ILSVRC2012_val_{i + 1:08d}.JPEG".encode() for i in range(n_stim)])
        fh["class_id"] = np.arange(n_stim) % 3
        fh["class_map_class_id"] = np.arange(3)
        fh["class_map_label"] = np.array([b"fish", b"bird", b"dog"])
    for i in range(0, n_stim, 2):
        (ih / "imagenet" / "validation" / f"ILSVRC2012_val_{i + 1:08d}.JPEG").write_bytes(jpeg(seed=60 + i))
    rng = np.random.default_rng(3)
    sets = np.stack([rng.choice(n_stim, 9, replace=False) for _ in range(5)])
    sets = np.concatenate([sets, np.array([[1, 2, 3, 4, -1, -1, -1, -1, -1]])])  # a 3-reference trial, 1 chosen
    n_select = np.array([2] * 5 + [1])
    with h5py.File(ih / "val" / "obs" / "obs-195.hdf5", "w") as fh:
        fh["stimulus_set"] = sets
        fh["n_select"] = n_select
    build("triplets", tmp_path / "i", ih, preset="ihsj")
    ds = Dataset(tmp_path / "i")
    ref = []
    for s, ns in zip(sets.tolist(), n_select.tolist()):
        refs = [x for x in s[1:] if x >= 0]
        ref += [[s[0], c, u] for c in refs[:ns] for u in refs[ns:]]
    assert ds.triplets.tolist() == ref and len(ref) == 5 * 12 + 2
    assert ds.item_class.tolist() == (np.arange(n_stim) % 3).tolist() and ds.class_names == ["fish", "bird", "dog"]
    assert ds.item_index.tolist()[:4] == [0, -1, 1, -1] and ds.labels(np.arange(3))["class"].tolist() == [0, 1, 2]


def test_triplets_on_real_files_when_present(tmp_path):
    """The THINGS test triplets (items from item_names.tsv) as a triplets dataset; skipped without ../shared/data."""
    data = Path("/work/shared/data/things")
    if not (data / "triplets_test10.txt").is_file():
        pytest.skip("no shared THINGS files on this machine")
    build("triplets", tmp_path / "t", triplets=[str(data / "triplets_test10.txt")], kind="odd-one-out", items=str(data / "item_names.tsv"))
    ds = Dataset(tmp_path / "t")
    assert len(ds) == 1854 and ds.card["triplets_read"] == 146168
    assert ds.card["counts"]["triplets"] + sum(ds.card["dropped"].values()) == 146168


# -- rooms ---------------------------------------------------------------------------------------


def test_rooms_format(tmp_path):
    (tmp_path / "names.txt").write_text("0,cup\n1,pan\n2,car\n3,tyre\n4,bed\n5,lamp\n6,pillow\n7,fork\n")
    (tmp_path / "t.csv").write_text("category,room\ncup,kitchen\n1,kitchen\nfork,kitchen\n2,garage\n3,garage\n4,bedroom\n5,bedroom\n6,Uncertain\n")
    result = cli("build-data", "--format", "rooms", tmp_path / "t.csv", "--out", tmp_path / "r", "--random", "3",
                 "--categories", tmp_path / "names.txt", "--seed", "2")
    assert result.exit_code == 0, result.output
    bal = json.loads((tmp_path / "r" / "room_assignment_balanced.json").read_text())
    assert bal == {"kitchen": [0, 1], "garage": [2, 3], "bedroom": [4, 5], "Uncertain": [6, 7]}
    randoms = [json.loads((tmp_path / "r" / f"room_assignment_balanced_random_{i}.json").read_text()) for i in range(3)]
    for r in randoms:
        assert sorted(len(v) for k, v in r.items() if k != "Uncertain") == [2, 2, 2] and r["Uncertain"] == [6, 7]
        assert sorted(c for k, v in r.items() if k != "Uncertain" for c in v) == [0, 1, 2, 3, 4, 5]
    assert len({json.dumps(r, sort_keys=True) for r in randoms}) > 1
    bad = cli("build-data", "--format", "rooms", tmp_path / "t.csv", "--out", tmp_path / "r2")
    assert bad.exit_code == 2 and "pass --categories FILE" in bad.output


# -- verify, readers, embeddings rows ---------------------------------------------------------------------


def test_verify_finds_damage(tmp_path):
    src = tmp_path / "src"
    for c in ("a", "b"):
        (src / c).mkdir(parents=True)
        for i in range(3):
            (src / c / f"{i}.jpg").write_bytes(jpeg(seed=i + (c == "b") * 10))
    build("imagefolder", tmp_path / "d", src)
    result = cli("build-data", "--verify", tmp_path / "d")
    assert result.exit_code == 0 and "OK" in result.output, result.output
    # change an index row: the fingerprint no longer matches
    t = pq.read_table(tmp_path / "d" / "images.parquet")
    idx = t.column("index").to_numpy().copy()
    idx[[0, 1]] = idx[[1, 0]]
    pq.write_table(t.set_column(2, "index", pa.array(idx)), tmp_path / "d" / "images.parquet")
    assert any("fingerprint" in p for p in verify_dataset(tmp_path / "d")[1])
    # damage an image's bytes: its checksum fails
    build("imagefolder", tmp_path / "e", src)
    with h5py.File(tmp_path / "e" / "images.h5", "r+") as fh:
        off = fh["offsets"][...]
        fh["bytes"][off[2] + 30 : off[2] + 40] = 0
    result = cli("build-data", "--verify", tmp_path / "e")
    assert result.exit_code == 1 and "image 2 fails its checksum" in result.output, result.output


def test_readers_and_rows_table_for_every_kind(tmp_path, tiny_world):
    from simtool.embedding.runs import rows_table

    vid = Dataset(tiny_world)
    rows = vid.rows("test")
    t, info = rows_table(vid, rows)
    assert t.column_names[:6] == ["id", "row", "split", "category", "object", "frame"]
    assert {"room:semantic", "room:random"} <= set(t.column_names) and set(info["rooms"]) == {"semantic", "random"}
    assert t.column("id").to_pylist()[0] == f"{vid.object_names[rows[0]]}/{vid.frame[rows[0]]}"
    room, _, _ = vid.rooms("semantic")
    assert t.column("room:semantic").to_pylist() == room[vid.category[rows]].tolist()
    # object codes are the ranks of the sorted names, as np.unique gives them
    assert (np.unique(vid.object_names, return_inverse=True)[1].ravel() == vid.object).all()
    with pytest.raises(UserError, match="video dataset"):
        Dataset(tiny_world).cls  # noqa: B018
    src = tmp_path / "src"
    for c in ("a", "b"):
        (src / c).mkdir(parents=True)
        (src / c / "0.jpg").write_bytes(jpeg())
    build("imagefolder", tmp_path / "c", src)
    cls = Dataset(tmp_path / "c")
    t, info = rows_table(cls, cls.rows("all"))
    assert t.column_names == ["id", "row", "split", "class"] and t.column("id").to_pylist() == ["a/0.jpg", "b/0.jpg"] and info["class_names"] == ["a", "b"]
    with pytest.raises(UserError, match="classes dataset"):
        cls.rooms("semantic")
    (tmp_path / "t.txt").write_text("x y z\ny z x\n")
    build("triplets", tmp_path / "t", triplets=[str(tmp_path / "t.txt")], kind="odd-one-out")
    tri = Dataset(tmp_path / "t")
    t, _ = rows_table(tri, tri.rows("test"))
    assert t.column_names == ["id", "row", "split", "item"] and t.column("id").to_pylist() == ["x", "y", "z"]
    assert tri.ref()["kind"] == "triplets" and len(tri.triplet_rows("all")) == 2


def test_prepare_image():
    big = jpeg(200, 100)
    out, why = prepare_image(big, 50)
    with Image.open(io.BytesIO(out)) as img:
        assert why is None and img.size == (50, 25)
    assert prepare_image(big, 0) == (big, None) and prepare_image(big, 400) == (big, None)
    small = png(10, 8)
    assert prepare_image(small, 320)[0] == small, "a small PNG is kept as it is"
    assert prepare_image(big[: len(big) // 2], 50)[0] is None
    grey = io.BytesIO()
    Image.fromarray(np.zeros((30, 60), np.uint8)).save(grey, "BMP")
    out, _ = prepare_image(grey.getvalue(), 320)
    with Image.open(io.BytesIO(out)) as img:
        assert img.format == "JPEG" and img.mode == "L" and img.size == (60, 30), "other formats are re-encoded"


def test_mvimgnet_dataset_trains_time_only(tmp_path):
    from tests.conftest import TINY_TRAIN, sets

    src = tmp_path / "src"
    for c in range(2):
        for o in range(6):
            d = src / str(c) / f"o{c}{o}" / "images"
            d.mkdir(parents=True)
            for f in range(4):
                (d / f"{f}.png").write_bytes(png(32, 32, seed=c * 100 + o * 10 + f))
    (tmp_path / "rooms.json").write_text(json.dumps({"r0": [0], "r1": [1]}))
    build("mvimgnet", tmp_path / "d", src, split="0.5,0.17,0.33", rooms=str(tmp_path / "rooms.json"))
    result = cli("train", "--preset", "time_only", "--data", tmp_path / "d", "--out", tmp_path / "run", "--device", "cpu", "--profile", "toyworld",
                 *sets(TINY_TRAIN + ["loop.epochs=1"]))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "completed"


# -- every registered builder ---------------------------------------------------------------------------


def _imagefolder_source(root: Path) -> Path:
    for c in range(4):
        (root / f"class{c}").mkdir(parents=True)
        (root / f"class{c}" / "a.jpg").write_bytes(jpeg(seed=c))
    return root


def _triplets_source(root: Path) -> dict:
    root.mkdir(parents=True)
    (root / "t.txt").write_text("".join(f"{a} {b} {c}\n" for a, b, c in [(0, 1, 2), (1, 2, 3), (2, 3, 0), (3, 0, 1)]))
    return {"triplets": [str(root / "t.txt")], "kind": "directed"}


def _rooms_source(root: Path) -> dict:
    root.mkdir(parents=True)
    (root / "t.csv").write_text("category,room\n0,kitchen\n1,kitchen\n2,garage\n3,garage\n")
    return {}


# format -> (make a tiny source under a folder: returns options, or the SRC path; SRC (None: the
# options name the files); the kind of the dataset it gives, or None for room files)
SOURCES = {
    "toyworld": (lambda root: {"sets": ["toyworld.objects_per_category=3", "toyworld.frames_per_object=2", "toyworld.image_size=16"]}, None, "video"),
    "mvimgnet": (lambda root: make_mvimgnet(root) and {}, "src", "video"),
    "icdl": (lambda root: make_icdl(root) or {}, "src", "video"),
    "imagefolder": (lambda root: _imagefolder_source(root) and {}, "src", "classes"),
    "cub": (lambda root: make_cub(root) and {}, "src", "classes"),
    "cars": (lambda root: make_cars(root) and {}, "src", "classes"),
    "sop": (lambda root: make_sop(root) and {}, "src", "classes"),
    "triplets": (_triplets_source, None, "triplets"),
    "rooms": (_rooms_source, "src/t.csv", None),
}


def test_every_registered_builder_has_a_generated_source():
    from simtool.data.builders import BUILDERS

    missing = sorted(set(BUILDERS.names()) - set(SOURCES))
    assert not missing, f"builders without a generated source in tests/test_builders.py SOURCES: {missing}"


@pytest.mark.parametrize("fmt", sorted(SOURCES))
def test_every_registered_builder_builds_its_generated_source(tmp_path, fmt):
    from simtool.data.builders import BUILDERS

    assert fmt in BUILDERS
    make, src, kind = SOURCES[fmt]
    options = make(tmp_path / "src") or {}
    sets = options.pop("sets", None)
    build(fmt, tmp_path / "out", tmp_path / src if src else None, sets=sets, **options)
    if kind is None:  # room files
        assert (tmp_path / "out" / "room_assignment_balanced.json").is_file()
        return
    ds = Dataset(tmp_path / "out")
    assert ds.kind == kind and len(ds) > 0 and verify_dataset(tmp_path / "out")[1] == []
    assert BUILDERS.get(fmt).reads_images == (fmt not in ("toyworld", "rooms"))
