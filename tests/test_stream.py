"""Tests for simtool.data.stream (the experience stream of Aubret et al., ICDL 2024)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simtool.data.stream import SAMPLING_MODES, WITHIN_VIDEO, Stream, build_stream, make_clips, positive_positions, sample_positives, video_stream

# ----------------------------------------------------------------------------- helpers


def make_world(n_rooms, cats_per_room, objs_per_cat, n_frames, seed=0, shuffle=True, id_offset=-50):
    """Flat frame table: (objects, frames, room_of_row); rows shuffled, odd object ids."""
    rng = np.random.default_rng(seed)
    n_cats = n_rooms * cats_per_room
    n_objs = n_cats * objs_per_cat
    if np.isscalar(n_frames):
        sizes = np.full(n_objs, int(n_frames))
    else:
        sizes = rng.integers(n_frames[0], n_frames[1] + 1, n_objs)
    obj_ids = np.arange(n_objs) * 7 + id_offset  # non-contiguous, some negative
    objects = np.repeat(obj_ids, sizes)
    frames = np.concatenate([np.arange(s) * 3 + 10 for s in sizes])  # non-contiguous frame ids
    cat = np.repeat(np.arange(n_objs) // objs_per_cat, sizes)
    room_of_cat = np.arange(n_cats) % n_rooms + 100  # room ids 100.. (not 0-based)
    room = room_of_cat[cat]
    if shuffle:
        p = rng.permutation(objects.size)
        objects, frames, room = objects[p], frames[p], room[p]
    return objects, frames, room


def clip_starts(stream: Stream) -> np.ndarray:
    """Stream positions where a clip starts."""
    return np.concatenate(([0], np.flatnonzero(np.diff(stream.clip) != 0) + 1))


def replay(stream: Stream, objects, frames, room_of_row, crop_number, seed, p0=False):
    """Walk the stream's clips, tracking remaining clips per room.

    Returns per boundary b (between stream clips b and b+1): changed, forced (current room
    empty, or with ``p0`` the room has supplied more than 80 % of its initial clips),
    others_left (another room still has clips).  Also the initial room counts.
    """
    clips = make_clips(objects, frames, crop_number, np.random.default_rng(seed))
    rooms_all = np.array([room_of_row[c[0]] for c in clips])
    ids, counts = np.unique(rooms_all, return_counts=True)
    rem = dict(zip(ids.tolist(), counts.tolist()))
    init = dict(rem)
    croom = stream.room[clip_starts(stream)]
    changed, forced, others = [], [], []
    for b in range(len(croom)):
        r = int(croom[b])
        rem[r] -= 1
        assert rem[r] >= 0
        if b == len(croom) - 1:
            break
        changed.append(croom[b + 1] != r)
        supplied = init[r] - rem[r]
        forced.append(rem[r] == 0 or (p0 and 5 * supplied > 4 * init[r]))
        others.append(sum(v for k, v in rem.items() if k != r) > 0)
    return np.array(changed, bool), np.array(forced, bool), np.array(others, bool), init


# ----------------------------------------------------------------------------- make_clips


def test_clips_are_consecutive_runs_of_one_object_in_required_order():
    objects, frames, _ = make_world(3, 2, 4, (1, 60), seed=1)
    clips = make_clips(objects, frames, 3.0, np.random.default_rng(0))
    assert all(c.dtype == np.int64 for c in clips)
    for c in clips:
        assert np.all(objects[c] == objects[c[0]])
        assert np.all(np.diff(frames[c]) == 3)  # consecutive frames (frame ids step by 3)
    # Clips tile the data in (object id, frame) order.
    cat = np.concatenate(clips)
    np.testing.assert_array_equal(cat, np.lexsort((frames, objects)))
    # Every clip of a video starts right after the previous one ends.
    for a, b in zip(clips[:-1], clips[1:]):
        if objects[a[0]] == objects[b[0]]:
            assert frames[b[0]] == frames[a[-1]] + 3


def test_clip_lengths_follow_one_plus_poisson():
    lam = 4.0
    n_vid, n_frames = 300, 400
    objects = np.repeat(np.arange(n_vid), n_frames)
    frames = np.tile(np.arange(n_frames), n_vid)
    clips = make_clips(objects, frames, lam, np.random.default_rng(3))
    obj = np.array([objects[c[0]] for c in clips])
    lens = np.array([len(c) for c in clips])
    last = np.append(obj[1:] != obj[:-1], True)
    drawn = lens[~last]  # the last clip of a video is truncated
    assert drawn.size > 20000
    assert drawn.min() >= 1
    assert abs(drawn.mean() - (1 + lam)) < 0.1
    assert abs(drawn.var() - lam) < 0.4
    assert abs(np.mean(drawn == 1) - math.exp(-lam)) < 0.01
    assert np.all(lens[last] <= n_frames)


def test_short_videos_are_one_clip_and_zero_crop_gives_whole_videos():
    objects = np.repeat(np.arange(50), 3)
    frames = np.tile(np.arange(3), 50)
    clips = make_clips(objects, frames, 40.0, np.random.default_rng(0))
    assert len(clips) == 50 and all(len(c) == 3 for c in clips)
    # crop_number = 0 means whole videos as clips (the original's meaning), whatever their lengths
    objects = np.repeat(np.arange(4), [5, 1, 7, 2])
    frames = np.concatenate([np.arange(n)[::-1] for n in (5, 1, 7, 2)])
    clips0 = make_clips(objects, frames, 0.0, np.random.default_rng(0))
    assert [len(c) for c in clips0] == [5, 1, 7, 2]
    assert all(np.all(np.diff(frames[c]) > 0) and len(set(objects[c])) == 1 for c in clips0), "whole videos, frame order"


# ----------------------------------------------------------------------------- build_stream


@pytest.mark.parametrize("ratio", [0.05, 0.3, 0.8, 1.0])
def test_stream_uses_clips_without_replacement_and_stops_at_ratio(ratio):
    objects, frames, room = make_world(4, 3, 5, (5, 80), seed=2)
    seed = 11
    s = build_stream(objects, frames, room, 5.0, 0.3, ratio, np.random.default_rng(seed))
    clips = make_clips(objects, frames, 5.0, np.random.default_rng(seed))
    assert s.n_clips_total == len(clips)
    for a in (s.rows, s.room, s.clip):
        assert a.dtype == np.int64 and a.shape == (len(s),)
    n_used = int(s.clip.max()) + 1
    assert n_used == math.ceil(ratio * len(clips))
    # Clip ids are 0,1,2,... in stream order and every clip is contiguous.
    starts = clip_starts(s)
    np.testing.assert_array_equal(s.clip[starts], np.arange(n_used))
    assert np.all(np.diff(s.clip) >= 0)
    # Every stream clip is one of make_clips' clips (same seed), used at most once.
    known = {tuple(c.tolist()) for c in clips}
    pieces = np.split(s.rows, starts[1:])
    assert all(tuple(p.tolist()) in known for p in pieces)
    assert np.unique(s.rows).size == len(s)
    np.testing.assert_array_equal(s.room, room[s.rows])
    if ratio == 1.0:
        np.testing.assert_array_equal(np.sort(s.rows), np.arange(objects.size))


@pytest.mark.parametrize("huge_ids", [False, True])
def test_stream_does_not_depend_on_input_row_order(huge_ids):
    objects, frames, room = make_world(4, 2, 3, (3, 30), seed=12, shuffle=False)
    if huge_ids:  # forces the lexsort path (a combined int64 key would overflow)
        objects = objects * (2**40) + 5
        frames = frames * (2**30)
    perm = np.random.default_rng(0).permutation(objects.size)
    a = build_stream(objects, frames, room, 4.0, 0.3, 0.7, np.random.default_rng(1))
    b = build_stream(objects[perm], frames[perm], room[perm], 4.0, 0.3, 0.7, np.random.default_rng(1))
    np.testing.assert_array_equal(perm[b.rows], a.rows)
    np.testing.assert_array_equal(b.room, a.room)
    np.testing.assert_array_equal(b.clip, a.clip)


def test_determinism():
    objects, frames, room = make_world(5, 2, 4, 30, seed=3)
    args = (objects, frames, room, 3.0, 0.2, 0.8)
    a = build_stream(*args, np.random.default_rng(7))
    b = build_stream(*args, np.random.default_rng(7))
    c = build_stream(*args, np.random.default_rng(8))
    for x, y in ((a.rows, b.rows), (a.room, b.room), (a.clip, b.clip)):
        np.testing.assert_array_equal(x, y)
    assert a.n_clips_total == b.n_clips_total
    assert not (len(a) == len(c) and np.array_equal(a.rows, c.rows))
    m1 = make_clips(objects, frames, 3.0, np.random.default_rng(7))
    m2 = make_clips(objects, frames, 3.0, np.random.default_rng(7))
    assert all(np.array_equal(x, y) for x, y in zip(m1, m2))


def test_room_changes_only_at_clip_boundaries():
    objects, frames, room = make_world(6, 2, 4, (10, 50), seed=4)
    s = build_stream(objects, frames, room, 4.0, 0.7, 0.9, np.random.default_rng(0))
    ch = s.room_changes()
    assert ch.dtype == np.bool_ and ch.shape == (len(s) - 1,)
    same_clip = s.clip[1:] == s.clip[:-1]
    assert not np.any(ch & same_clip)
    assert np.any(ch)


@pytest.mark.parametrize("ratio", [1.0, 0.8, 0.6])
def test_p0_changes_only_when_forced_and_every_room_appears(ratio):
    """p = 0: the viewer moves on only when its room is empty or has supplied more than 80 % of its
    initial clips (the original's rule), so every room is in the stream, even cut at 80 %."""
    n_rooms = 8
    objects, frames, room = make_world(n_rooms, 2, 5, (5, 40), seed=5)
    for seed in range(5):
        s = build_stream(objects, frames, room, 3.0, 0.0, ratio, np.random.default_rng(seed))
        changed, forced, others, init = replay(s, objects, frames, room, 3.0, seed, p0=True)
        np.testing.assert_array_equal(changed, forced & others)  # every change forced, every possible forced one a change
        if ratio >= 0.8:  # each room supplies > 80 % of its clips before the viewer leaves it
            assert set(np.unique(s.room)) == set(np.unique(room)), "every room appears"
        croom = s.room[clip_starts(s)]
        first_block = np.flatnonzero(croom != croom[0])[0]
        assert 5 * first_block > 4 * init[int(croom[0])] and 5 * (first_block - 1) <= 4 * init[int(croom[0])], "the first room stops right after 80 %"


def test_p1_changes_at_every_boundary_while_another_room_has_clips():
    objects, frames, room = make_world(4, 2, 3, (5, 40), seed=6)
    for seed in range(5):
        s = build_stream(objects, frames, room, 2.0, 1.0, 1.0, np.random.default_rng(seed))
        changed, forced, others, _ = replay(s, objects, frames, room, 2.0, seed)
        np.testing.assert_array_equal(changed, others)
        assert changed.sum() > len(changed) // 2


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_change_fraction_at_unforced_boundaries_matches_p(p):
    objects, frames, room = make_world(20, 2, 25, 200, seed=7, shuffle=False)
    seed = 100 + int(p * 10)
    s = build_stream(objects, frames, room, 3.0, p, 0.8, np.random.default_rng(seed))
    changed, forced, others, _ = replay(s, objects, frames, room, 3.0, seed)
    free = ~forced & others
    assert free.sum() > 20000
    assert abs(changed[free].mean() - p) < 0.03
    assert np.all(changed[forced & others])


def _cross_room_fraction_exact(room: np.ndarray, w: int) -> float:
    """Brute force: mean over every position i and every s in {-w..w} of room[i] != room[clamp(i+s)]."""
    L = room.size
    i = np.arange(L)
    total = 0.0
    for s in range(-w, w + 1):
        j = np.clip(i + s, 0, L - 1)
        total += np.mean(room[i] != room[j])
    return total / (2 * w + 1)


def test_positive_pairs_cross_rooms_as_expected():
    objects, frames, room = make_world(20, 2, 10, 200, seed=8, shuffle=False)
    w = 2
    e_abs_s = sum(abs(s) for s in range(-w, w + 1)) / (2 * w + 1)
    fractions = []
    for k, p in enumerate([0.1, 0.3, 0.5]):
        s = build_stream(objects, frames, room, 7.0, p, 0.8, np.random.default_rng(k))
        L = len(s)
        exact = _cross_room_fraction_exact(s.room, w)
        rng = np.random.default_rng(1000 + k)
        B = 200_000
        anchors = rng.integers(0, L, B)
        pos = positive_positions(anchors, L, w, rng)
        emp = np.mean(s.room[anchors] != s.room[pos])
        sd = math.sqrt(exact * (1 - exact) / B)
        assert abs(emp - exact) < 5 * sd + 1e-4
        mean_clip = L / (int(s.clip.max()) + 1)
        approx = p * e_abs_s / mean_clip
        assert abs(exact - approx) < 0.25 * approx
        fractions.append(exact)
    assert fractions[0] < fractions[1] < fractions[2]


def _one_frame_videos(room_sizes: dict[int, int]):
    """Every frame its own one-frame video (crop_number 0 = whole videos = single frames)."""
    room = np.concatenate([np.full(n, r) for r, n in room_sizes.items()])
    objects = np.arange(room.size)
    return objects, np.zeros(room.size, dtype=np.int64), room


def test_clips_of_a_room_are_shuffled():
    # p = 0: the first room supplies its first 81 of 100 clips (just over 80 %) as one block, in random order.
    objects, frames, room = _one_frame_videos({0: 100, 1: 100, 2: 100})
    firsts = []
    for seed in range(300):
        s = build_stream(objects, frames, room, 0.0, 0.0, 1.0, np.random.default_rng(seed))
        r0 = s.room[0]
        block = s.rows[: np.flatnonzero(s.room != r0)[0]]
        assert block.size == 81 and np.unique(block).size == 81 and np.all(room[block] == r0)
        firsts.append(block[0] - 100 * r0)  # which of its room's 100 clips came first
    firsts = np.array(firsts)
    assert abs(firsts.mean() - 49.5) < 6  # uniform over 0..99 (sd of the mean ~1.7)
    assert np.unique(firsts).size > 60


def test_start_room_is_proportional_to_clip_counts():
    objects, frames, room = _one_frame_videos({0: 300, 1: 100, 2: 100})
    starts = []
    for seed in range(2000):
        s = build_stream(objects, frames, room, 0.0, 0.5, 0.01, np.random.default_rng(seed))
        starts.append(s.room[0])
    freq = np.bincount(starts, minlength=3) / len(starts)
    assert abs(freq[0] - 0.6) < 0.04 and abs(freq[1] - 0.2) < 0.04 and abs(freq[2] - 0.2) < 0.04
    assert 2.3 < freq[0] / freq[1] < 3.9


def test_changed_to_room_is_drawn_among_other_rooms_by_remaining_clips():
    # Rooms 0/1/2 with 100/300/100 single-frame clips; with p=1 the first move leaves the
    # starting room; from room 0 it goes to room 1 with probability 300/400.
    objects, frames, room = _one_frame_videos({0: 100, 1: 300, 2: 100})
    dest = []
    for seed in range(3000):
        s = build_stream(objects, frames, room, 0.0, 1.0, 0.01, np.random.default_rng(seed))
        assert s.room[1] != s.room[0]
        if s.room[0] == 0:
            dest.append(s.room[1])
    dest = np.array(dest)
    assert dest.size > 400
    assert abs(np.mean(dest == 1) - 0.75) < 0.07


def test_validation_errors():
    o = np.array([0, 0, 1])
    f = np.array([0, 1, 0])
    r = np.array([0, 0, 1])
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="empty"):
        build_stream(np.array([], int), np.array([], int), np.array([], int), 1.0, 0.1, 0.8, rng)
    with pytest.raises(ValueError, match="same length"):
        build_stream(o, f[:2], r, 1.0, 0.1, 0.8, rng)
    with pytest.raises(ValueError, match="room_of_row"):
        build_stream(o, f, r[:2], 1.0, 0.1, 0.8, rng)
    with pytest.raises(ValueError, match="room_of_row"):
        build_stream(o, f, np.array([0, 1, 1]), 1.0, 0.1, 0.8, rng)
    with pytest.raises(ValueError, match="p_change_room"):
        build_stream(o, f, r, 1.0, 1.5, 0.8, rng)
    with pytest.raises(ValueError, match="chunk_ratio_limit"):
        build_stream(o, f, r, 1.0, 0.1, 0.0, rng)
    with pytest.raises(ValueError, match="crop_number"):
        build_stream(o, f, r, -1.0, 0.1, 0.8, rng)
    with pytest.raises(ValueError, match="empty"):
        make_clips(np.array([], int), np.array([], int), 1.0, rng)
    with pytest.raises(ValueError):
        positive_positions(np.array([0, 5]), 5, 1, rng)
    with pytest.raises(ValueError):
        positive_positions(np.array([0]), 5, -1, rng)


def test_single_row_stream():
    s = build_stream(np.array([3]), np.array([0]), np.array([9]), 7.0, 0.5, 0.8, np.random.default_rng(0))
    assert len(s) == 1 and s.rows.tolist() == [0] and s.room.tolist() == [9] and s.clip.tolist() == [0]
    assert s.n_clips_total == 1 and s.room_changes().shape == (0,)


# ----------------------------------------------------------------------------- positive_positions


def test_positive_positions_bounds_and_uniform_offsets():
    L, w, B = 1000, 3, 140_000
    rng = np.random.default_rng(0)
    anchors = rng.integers(0, L, B)
    pos = positive_positions(anchors, L, w, rng)
    assert pos.dtype == np.int64 and pos.shape == (B,)
    assert pos.min() >= 0 and pos.max() <= L - 1
    assert np.all(np.abs(pos - anchors) <= w)
    inner = (anchors >= w) & (anchors <= L - 1 - w)
    s = pos[inner] - anchors[inner]
    freq = np.bincount(s + w, minlength=2 * w + 1) / s.size
    assert freq.size == 2 * w + 1
    assert np.all(np.abs(freq - 1 / (2 * w + 1)) < 0.01)
    # At the left edge offsets below zero are clamped onto position 0.
    edge = positive_positions(np.zeros(70_000, np.int64), L, w, rng)
    assert abs(np.mean(edge == 0) - (w + 1) / (2 * w + 1)) < 0.01
    # w = 0 is the identity; same seed, same positives.
    np.testing.assert_array_equal(positive_positions(anchors, L, 0, rng), anchors)
    a = positive_positions(anchors, L, w, np.random.default_rng(5))
    b = positive_positions(anchors, L, w, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- sampling modes


def _offsets_leaving_the_clip(stream: Stream, anchors, w, seed):
    """The offsets ``interval_uniform`` draws first (as ``positive_positions``) and which leave the anchor's clip."""
    s = np.random.default_rng(seed).integers(-w, w + 1, size=anchors.shape[0], dtype=np.int64)
    starts, lens = stream.clip_bounds()
    c = stream.clip[anchors]
    t = anchors - starts[c] + s
    return s, (t < 0) | (t >= lens[c]), t, c


def test_clip_bounds():
    objects, frames, room = make_world(3, 2, 4, (1, 12), seed=20)
    s = build_stream(objects, frames, room, 2.0, 0.3, 1.0, np.random.default_rng(0))
    starts, lens = s.clip_bounds()
    np.testing.assert_array_equal(starts, clip_starts(s))
    assert lens.sum() == len(s) and lens.min() >= 1
    np.testing.assert_array_equal(np.repeat(np.arange(starts.size), lens), s.clip)


def test_interval_mode_draws_exactly_what_positive_positions_draws():
    objects, frames, room = make_world(4, 2, 5, (3, 30), seed=21)
    s = build_stream(objects, frames, room, 3.0, 0.2, 0.8, np.random.default_rng(1))
    anchors = np.random.default_rng(2).integers(0, len(s), 5000)
    a = sample_positives(s, anchors, "interval", 2, np.random.default_rng(3), 0.2)
    b = positive_positions(anchors, len(s), 2, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 1.0])
def test_interval_uniform_changes_room_across_a_clip_boundary_with_probability_p(p):
    """interval_uniform: an offset that leaves the clip lands in another room with probability p (for
    interval it is whatever the fixed stream's neighbour is); offsets inside the clip are interval's."""
    objects, frames, room = make_world(8, 2, 20, (4, 30), seed=22)
    s = build_stream(objects, frames, room, 3.0, 0.1, 0.8, np.random.default_rng(4))
    B, w, seed = 300_000, 2, 11
    anchors = np.random.default_rng(5).integers(0, len(s), B)
    pos = sample_positives(s, anchors, "interval_uniform", w, np.random.default_rng(seed), p)
    off, leaves, _, c = _offsets_leaving_the_clip(s, anchors, w, seed)
    assert pos.dtype == np.int64 and pos.min() >= 0 and pos.max() < len(s)
    np.testing.assert_array_equal(pos[~leaves], anchors[~leaves] + off[~leaves])
    assert leaves.sum() > 20_000
    changed = s.room[pos[leaves]] != s.room[anchors[leaves]]
    sd = math.sqrt(max(p * (1 - p), 1e-9) / leaves.sum())
    assert abs(changed.mean() - p) < 5 * sd + 1e-9


def test_interval_uniform_jumps_to_a_uniform_clip_of_the_room_and_walks_on_without_skipping_a_frame():
    objects, frames, room = make_world(3, 2, 30, 6, seed=23, shuffle=False)
    s = build_stream(objects, frames, room, 0.0, 0.1, 1.0, np.random.default_rng(6))  # whole 6-frame videos as clips
    starts, lens = s.clip_bounds()
    B, w, seed = 200_000, 2, 12
    anchors = np.random.default_rng(7).integers(0, len(s), B)
    pos = sample_positives(s, anchors, "interval_uniform", w, np.random.default_rng(seed), 0.0)
    off, leaves, t, c = _offsets_leaving_the_clip(s, anchors, w, seed)
    dest = s.clip[pos]
    frame_in = pos - starts[dest]
    fwd, bwd = leaves & (t >= lens[c]), leaves & (t < 0)
    np.testing.assert_array_equal(frame_in[fwd], (t - lens[c])[fwd])  # from the last frame, +1 is the target's first frame
    np.testing.assert_array_equal(frame_in[bwd], (lens[dest] + t)[bwd])  # from the first frame, -1 is the target's last frame
    assert np.all(s.room[pos] == s.room[anchors]), "p = 0: always the anchor's room"
    # the target is a clip of the anchor's room drawn uniformly (60 clips per room), not the stream's neighbour
    nxt = np.minimum(c + 1, starts.size - 1)
    assert np.mean(dest[fwd] == nxt[fwd]) < 0.05
    first_room = leaves & (s.room[anchors] == 100)
    hits = np.bincount(dest[first_room], minlength=starts.size)[s.room[starts] == 100]
    assert hits.size == 60
    expected = first_room.sum() / 60
    assert np.abs(hits - expected).max() < 5 * math.sqrt(expected)


def test_interval_uniform_changes_to_the_other_rooms_in_proportion_to_their_clips():
    objects, frames, room = _one_frame_videos({0: 100, 1: 300, 2: 100})
    s = build_stream(objects, frames, room, 0.0, 0.5, 1.0, np.random.default_rng(8))
    anchors = np.flatnonzero(s.room == 0)
    anchors = np.repeat(anchors, 400)
    pos = sample_positives(s, anchors, "interval_uniform", 1, np.random.default_rng(9), 1.0)
    moved = pos != anchors  # one-frame clips: every non-zero offset jumps
    assert abs(moved.mean() - 2 / 3) < 0.01
    assert np.all(s.room[pos[moved]] != 0)
    assert abs(np.mean(s.room[pos[moved]] == 1) - 0.75) < 0.01
    # a single room: "another room" falls back to the anchor's own
    one = build_stream(*_one_frame_videos({4: 50}), 0.0, 1.0, 1.0, np.random.default_rng(0))
    assert np.all(one.room[sample_positives(one, np.arange(50), "interval_uniform", 3, np.random.default_rng(1), 1.0)] == 4)


def test_video_stream_is_every_frame_video_by_video():
    objects, frames, room = make_world(3, 2, 4, (1, 9), seed=24)
    v = video_stream(objects, frames, room)
    assert len(v) == objects.size and v.n_clips_total == np.unique(objects).size
    np.testing.assert_array_equal(v.rows, np.lexsort((frames, objects)))
    starts, lens = v.clip_bounds()
    assert starts.size == np.unique(objects).size
    for k in range(starts.size):
        rows = v.rows[starts[k]:starts[k] + lens[k]]
        assert np.unique(objects[rows]).size == 1 and np.all(np.diff(frames[rows]) > 0)
        assert lens[k] == np.sum(objects == objects[rows[0]]), "a whole video"
    np.testing.assert_array_equal(v.room, room[v.rows])


@pytest.mark.parametrize("mode", WITHIN_VIDEO)
def test_within_video_modes_never_cross_a_video(mode):
    objects, frames, room = make_world(4, 2, 10, (1, 12), seed=25)
    v = video_stream(objects, frames, room)
    anchors = np.tile(np.arange(len(v)), 200)
    pos = sample_positives(v, anchors, mode, 2, np.random.default_rng(0))
    assert pos.dtype == np.int64
    np.testing.assert_array_equal(objects[v.rows[pos]], objects[v.rows[anchors]])
    starts, lens = v.clip_bounds()
    c = v.clip[anchors]
    f, n, fp = anchors - starts[c], lens[c], pos - starts[c]
    if mode == "last":
        np.testing.assert_array_equal(fp, n - 1)
    elif mode == "randomwalk":
        np.testing.assert_array_equal(fp, np.where(n == 1, 0, np.where(f < n - 1, f + 1, f - 1)))
    else:  # uniform over the video's frames, the anchor's own included
        eight = n == 8
        assert eight.sum() > 5000
        freq = np.bincount(fp[eight], minlength=8) / eight.sum()
        assert np.all(np.abs(freq - 1 / 8) < 0.015)
        assert np.all(sample_positives(v, anchors, mode, 2, np.random.default_rng(0)) == pos), "seeded"


def test_sampling_mode_errors():
    v = video_stream(np.array([0, 0, 1]), np.array([0, 1, 0]), np.array([0, 0, 1]))
    with pytest.raises(ValueError, match="sampling mode"):
        sample_positives(v, np.array([0]), "nearest", 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="anchors"):
        sample_positives(v, np.array([3]), "last", 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="p_change_room"):
        sample_positives(v, np.array([0]), "interval_uniform", 2, np.random.default_rng(0), 2.0)
    assert set(WITHIN_VIDEO) < set(SAMPLING_MODES) and SAMPLING_MODES[0] == "interval"
    from typing import get_args

    from simtool.methods.time_ssl import StreamSpec

    assert get_args(StreamSpec.model_fields["sampling"].annotation) == SAMPLING_MODES, "the spec offers exactly the stream's modes"
    assert StreamSpec().sampling == "interval", "the original's default"


# ----------------------------------------------------------------------------- the modes in training


def _method(tiny_world, mode, preset="time_only"):
    import torch
    from rich.console import Console

    from simtool.engine.distributed import DistInfo
    from simtool.methods import resolve_train_spec
    from simtool.methods.time_ssl import TimeSSL
    from tests.conftest import TINY_TRAIN

    spec = resolve_train_spec(preset, sets=TINY_TRAIN + [f"stream.sampling={mode}"], data=str(tiny_world), device="cpu")
    return TimeSSL(spec, torch.device("cpu"), DistInfo(), Console(quiet=True))


@pytest.mark.parametrize("mode", WITHIN_VIDEO)
def test_within_video_training_plans_take_every_frame_and_stay_in_its_video(tiny_world, mode):
    m = _method(tiny_world, mode)
    assert len(m._stream(0)) == len(m.train_rows), "no stream: every training frame is an anchor"
    for epoch in (0, 1):
        plan = m.epoch_plan(epoch)
        a = np.concatenate([p[0] for p in plan])
        p = np.concatenate([p[1] for p in plan])
        assert len(plan) == len(m.train_rows) // m.per_device and np.unique(a).size == a.size
        np.testing.assert_array_equal(m.ds.object[a], m.ds.object[p])
        if mode == "last":
            last: dict[int, int] = {}
            for o, f in zip(m.ds.object[m.train_rows].tolist(), m.ds.frame[m.train_rows].tolist()):
                last[o] = max(last.get(o, -1), f)
            assert all(int(f) == last[int(o)] for o, f in zip(m.ds.object[p], m.ds.frame[p])), "the video's last frame"


def test_interval_uniform_training_plan_crosses_to_objects_of_the_anchors_room(tiny_world):
    m = _method(tiny_world, "interval_uniform")
    base = _method(tiny_world, "interval")
    assert np.array_equal(m._stream(0).rows, base._stream(0).rows), "the same stream; only the jumps differ"
    a = np.concatenate([p[0] for p in m.epoch_plan(0)])
    p = np.concatenate([p[1] for p in m.epoch_plan(0)])
    assert np.array_equal(a, np.concatenate([q[0] for q in base.epoch_plan(0)])), "the same anchors"
    other = m.ds.object[a] != m.ds.object[p]
    assert other.any() and (~other).any()


def test_dry_run_shows_the_sampling_mode_and_a_bad_one_is_refused():
    from tests.conftest import cli

    r = cli("train", "--preset", "time_only", "--set", "stream.sampling=interval_uniform", "--dry-run")
    assert r.exit_code == 0 and "sampling: interval_uniform" in r.output
    assert "sampling: interval" in cli("train", "--preset", "normal", "--dry-run").output
    bad = cli("train", "--preset", "time_only", "--set", "stream.sampling=nearest", "--dry-run")
    assert bad.exit_code == 2 and "Traceback" not in bad.output


@pytest.mark.parametrize("mode", ["interval_uniform", "randomwalk"])
def test_sampling_modes_train(tmp_path, tiny_world, mode):
    from simtool.methods import resolve_train_spec
    from simtool.stages import train as train_lib
    from tests.conftest import TINY_TRAIN

    spec = resolve_train_spec("time_only", sets=TINY_TRAIN + ["loop.epochs=1", f"stream.sampling={mode}"], data=str(tiny_world), device="cpu")
    _, summary = train_lib.train(spec, str(tmp_path / "run"))
    assert summary["steps"] > 0 and math.isfinite(summary["final_loss"])

