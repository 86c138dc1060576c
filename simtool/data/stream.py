"""The "experience stream" of Aubret et al. (ICDL 2024).

Reference: A. Aubret, T. Schaumlöffel, G. Roig, J. Triesch, "Learning Object Semantic Similarity
with Self-Supervision", ICDL 2024 (arXiv:2405.05143).

The paper learns object similarity from *temporal* proximity: a viewer walks through a
world of rooms (contexts), looking at one object after another, and two images seen close
in time are treated as a positive pair.  Because objects of one category live in the same
room, temporally close views of *different* objects are usually semantically related,
which is what turns "time" into "object similarity".

This module builds that stream from a flat table of frames (pure NumPy, deterministic
given a :class:`numpy.random.Generator`):

1. Every object's video (its rows sorted by frame index, i.e. turntable order) is cut into
   consecutive clips of ``1 + Poisson(crop_number)`` frames; the last clip of a video takes
   what is left, and a video shorter than the drawn length is a single clip. ``crop_number = 0``
   means whole videos as clips (as in the original code).
2. A clip belongs to the room of its object's category; the clips of each room are shuffled
   into a per-room queue.
3. The stream starts in a room drawn with probability proportional to its number of clips.
4. At every clip boundary the viewer moves to another room with probability
   ``p_change_room``, or is forced to move when the current room has no clip left, or, with
   ``p_change_room = 0`` only, once the current room has supplied more than 80 % of its initial
   clips (the original's rule, so that every room appears in a p = 0 stream); the new room is
   drawn in proportion to the remaining clips of the rooms *other* than the current one (if
   none has clips left the viewer stays).  Otherwise it takes the next clip of the current
   room.
5. Clips are used without replacement; the stream stops once
   ``ceil(chunk_ratio_limit * total_clips)`` clips have been used.
6. The result is one ordered array of frame rows (:class:`Stream`).

Positive pairs are sampled with :func:`sample_positives` in one of the original's sampling modes
(``--sampling_mode``, ``--interval_uniform``):

* ``interval`` (the default, :func:`positive_positions`): for an anchor at stream position ``i``
  the positive is ``clamp(i + s, 0, L - 1)`` with ``s`` uniform in ``{-w, ..., w}``
  (``w = rotation_range``; ``s = 0`` allowed): the fixed stream is followed across clip boundaries.
* ``interval_uniform``: the same offset ``s``; while it stays inside the anchor's clip the positive
  is ``i + s``, but when it leaves the clip the walk does not follow the stream: it jumps to a clip
  drawn uniformly among the stream's clips of the anchor's room with probability
  ``1 - p_change_room``, among the clips of the other rooms otherwise, and goes on there by the
  steps left (forwards from its first frame, backwards from its last; again at its end). So the room
  changes across a clip boundary with probability exactly ``p_change_room``, whatever the order.
* the within-video modes of the original's lineage (AASSL), used on :func:`video_stream` (every
  training frame, each video one clip, no stream walk): the positive is another frame of the
  anchor's own clip, never one of another video: ``uniform`` (a frame drawn uniformly, the anchor's
  own included), ``randomwalk`` (the next frame; the previous one at the last frame; the original's
  ``randomwalk+``) or ``last`` (the clip's last frame).

Random draws happen in a fixed order: :func:`build_stream` first draws the clip partition
exactly as :func:`make_clips` does, so ``make_clips(objects, frames, crop_number,
np.random.default_rng(seed))`` reproduces the clips that ``build_stream(...,
rng=np.random.default_rng(seed))`` chooses from.

Performance: everything except the walk over rooms is vectorised; the walk is a Python loop
over *room visits* (not clips or frames) with a Fenwick tree for the proportional draw, so
its cost grows with the number of room changes, not with the number of frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Stream", "make_clips", "build_stream", "video_stream", "positive_positions", "sample_positives", "SAMPLING_MODES", "WITHIN_VIDEO"]

SAMPLING_MODES = ("interval", "interval_uniform", "uniform", "randomwalk", "last")
WITHIN_VIDEO = ("uniform", "randomwalk", "last")  # positives from the anchor's own video; used on :func:`video_stream`


@dataclass
class Stream:
    """One experience stream.

    Attributes:
        rows: int64 ``(L,)`` indices into the input arrays, in stream order.
        room: int64 ``(L,)`` room id (as given in ``room_of_row``) of each position.
        clip: int64 ``(L,)`` clip id of each position; the k-th clip of the stream has id
            ``k`` (ids ``0, 1, 2, ...`` in stream order).
        n_clips_total: number of clips before the ``chunk_ratio_limit`` cut.
    """

    rows: np.ndarray
    room: np.ndarray
    clip: np.ndarray
    n_clips_total: int

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def room_changes(self) -> np.ndarray:
        """bool ``(L-1,)``: True where ``room[i+1] != room[i]``."""
        return self.room[1:] != self.room[:-1]

    def clip_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """int64 ``(K,)`` start position and length of every clip ``0..K-1`` of the stream."""
        L = len(self)
        starts = np.flatnonzero(np.diff(self.clip) != 0) + 1 if L > 1 else np.zeros(0, dtype=np.int64)
        starts = np.concatenate(([0], starts)).astype(np.int64) if L else np.zeros(0, dtype=np.int64)
        return starts, np.diff(np.append(starts, L)).astype(np.int64)


# ----------------------------------------------------------------------------- helpers


def _check_1d(name: str, a) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {a.shape}")
    if a.size and not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.bool_)):
        if np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
            return a.astype(np.int64)
        raise ValueError(f"{name} must hold integers, got dtype {a.dtype}")
    return a


def _check_inputs(objects, frames) -> tuple[np.ndarray, np.ndarray]:
    objects = _check_1d("objects", objects)
    frames = _check_1d("frames", frames)
    if objects.shape[0] != frames.shape[0]:
        raise ValueError(
            f"objects and frames must have the same length, got {objects.shape[0]} and {frames.shape[0]}"
        )
    if objects.shape[0] == 0:
        raise ValueError("cannot build clips from an empty input (0 frames)")
    return objects, frames


def _check_crop_number(crop_number: float) -> float:
    lam = float(crop_number)
    if not math.isfinite(lam) or lam < 0:
        raise ValueError(f"crop_number must be a finite number >= 0, got {crop_number!r}")
    return lam


def _video_order(objects: np.ndarray, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows sorted by (object, frame) and the start offset of every video in that order.

    Returns ``order`` int64 ``(N,)`` and ``video_starts`` int64 ``(V,)``.
    """
    n = objects.shape[0]
    d_obj = np.diff(objects)
    # Fast path: input already grouped in ascending (object, frame) order.
    if n < 2 or (np.all(d_obj >= 0) and np.all((d_obj > 0) | (np.diff(frames) >= 0))):
        order = np.arange(n, dtype=np.int64)
        sorted_obj = objects
    else:
        o_min, o_max = int(objects.min()), int(objects.max())
        f_min, f_max = int(frames.min()), int(frames.max())
        f_span = f_max - f_min + 1
        if (o_max - o_min + 1) * f_span < 2**62:
            # One int64 key sorts about twice as fast as lexsort; stable keeps tie order.
            key = (objects.astype(np.int64) - o_min) * f_span + (frames.astype(np.int64) - f_min)
            order = np.argsort(key, kind="stable").astype(np.int64, copy=False)
        else:
            order = np.lexsort((frames, objects)).astype(np.int64, copy=False)
        sorted_obj = objects[order]
    new_video = np.empty(n, dtype=bool)
    new_video[0] = True
    np.not_equal(sorted_obj[1:], sorted_obj[:-1], out=new_video[1:])
    return order, np.flatnonzero(new_video).astype(np.int64)


def _clip_partition(
    objects: np.ndarray, frames: np.ndarray, lam: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised clip cutting.

    Returns ``order`` int64 ``(N,)`` (rows in (object, frame) order), ``clip_starts`` int64
    ``(C,)`` and ``clip_lens`` int64 ``(C,)`` (clip k is ``order[clip_starts[k]:][:clip_lens[k]]``)
    and ``video_starts`` int64 ``(V,)``.

    ``lam == 0`` means whole videos as clips (no draw). Otherwise lengths ``1 + Poisson(lam)``
    are drawn in rounds: each video still to be covered gets a
    batch of draws sized to cover its remaining frames with near certainty (never more draws
    than remaining frames, which always suffices); a video keeps the drawn clips that start
    inside it, and the rare video left uncovered gets another batch.
    """
    order, video_starts = _video_order(objects, frames)
    n = order.shape[0]
    sizes = np.diff(np.append(video_starts, n))
    if lam == 0:  # crop_number = 0: every video is one clip (as in the original)
        return order, video_starts.copy(), sizes.astype(np.int64), video_starts
    covered = np.zeros(sizes.shape[0], dtype=np.int64)  # frames of each video cut so far
    todo = np.arange(sizes.shape[0], dtype=np.int64)
    parts = []
    mean = 1.0 + lam
    while todo.size:
        left = sizes[todo] - covered[todo]
        k = np.minimum(left, np.ceil(1.1 * left / mean).astype(np.int64) + 8)
        lens = rng.poisson(lam, size=int(k.sum())).astype(np.int64) + 1
        seg = np.repeat(np.arange(todo.shape[0], dtype=np.int64), k)
        first = np.cumsum(k) - k
        cs = np.cumsum(lens)
        excl = cs - lens
        rel = excl - excl[first][seg]  # clip start relative to what this video had covered
        keep = rel < left[seg]
        kept_seg = seg[keep]
        parts.append(video_starts[todo][kept_seg] + covered[todo][kept_seg] + rel[keep])
        covered[todo] += cs[first + k - 1] - excl[first]
        todo = todo[covered[todo] < sizes[todo]]
    clip_starts = parts[0] if len(parts) == 1 else np.sort(np.concatenate(parts))
    # Clips tile every video, so a clip ends where the next one starts.
    clip_lens = np.diff(np.append(clip_starts, n))
    return order, clip_starts, clip_lens, video_starts


def _ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(starts[k], starts[k] + lens[k])`` over k (int64)."""
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.cumsum(lens) - lens
    return np.repeat(starts - offsets, lens) + np.arange(total, dtype=np.int64)


class _Fenwick:
    """Binary indexed tree over non-negative integer weights (pure Python, O(log R))."""

    __slots__ = ("n", "tree", "top")

    def __init__(self, weights: list[int]):
        self.n = n = len(weights)
        tree = [0] * (n + 1)
        for i, w in enumerate(weights, 1):
            tree[i] += w
            j = i + (i & -i)
            if j <= n:
                tree[j] += tree[i]
        self.tree = tree
        top = 1
        while top * 2 <= n:
            top *= 2
        self.top = top

    def add(self, i: int, delta: int) -> None:
        tree, n = self.tree, self.n
        i += 1
        while i <= n:
            tree[i] += delta
            i += i & -i

    def prefix(self, i: int) -> int:
        """Sum of weights ``[0, i)``."""
        tree = self.tree
        s = 0
        while i > 0:
            s += tree[i]
            i -= i & -i
        return s

    def find(self, x: int) -> int:
        """Smallest index k with ``prefix(k + 1) > x`` (requires ``0 <= x < total``)."""
        tree, n = self.tree, self.n
        pos = 0
        step = self.top
        while step:
            nxt = pos + step
            if nxt <= n and tree[nxt] <= x:
                pos = nxt
                x -= tree[nxt]
            step >>= 1
        return pos


# ----------------------------------------------------------------------------- public API


def make_clips(
    objects: np.ndarray, frames: np.ndarray, crop_number: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Cut every object's video into clips of ``1 + Poisson(crop_number)`` frames.

    Args:
        objects: ``(N,)`` integer object id of each row (any integers).
        frames: ``(N,)`` frame index of each row; a video is the object's rows sorted by frame.
        crop_number: Poisson mean λ >= 0 of the extra clip length (0: every video is one clip).
        rng: random generator (consumed by the Poisson length draws).

    Returns:
        List of ``C`` int64 arrays of row indices, each one clip in frame order; ordered by
        object id (ascending), then by position in the video.  The last clip of a video takes
        what is left, so the clips of a video tile it exactly.
    """
    objects, frames = _check_inputs(objects, frames)
    lam = _check_crop_number(crop_number)
    order, clip_starts, _, _ = _clip_partition(objects, frames, lam, rng)
    return np.split(order, clip_starts[1:])


def build_stream(
    objects: np.ndarray,
    frames: np.ndarray,
    room_of_row: np.ndarray,
    crop_number: float,
    p_change_room: float,
    chunk_ratio_limit: float,
    rng: np.random.Generator,
) -> Stream:
    """Build the experience stream (see the module docstring for the exact process).

    Args:
        objects: ``(N,)`` integer object id of each row.
        frames: ``(N,)`` frame index of each row.
        room_of_row: ``(N,)`` integer room id of each row (the room of the row's category);
            all rows of one object must share a room.
        crop_number: Poisson mean λ >= 0; clips have ``1 + Poisson(λ)`` frames (0: whole videos).
        p_change_room: probability in ``[0, 1]`` of moving to another room at a clip boundary.
        chunk_ratio_limit: fraction in ``(0, 1]`` of clips to use;
            the stream holds ``ceil(chunk_ratio_limit * n_clips_total)`` clips.
        rng: random generator.  Draw order: clip lengths (as :func:`make_clips`), the room
            shuffles, the change decisions, then the room draws.

    Returns:
        :class:`Stream` of length ``L`` (``L == N`` when ``chunk_ratio_limit == 1``).

    Raises:
        ValueError: empty input, mismatched lengths, non-integer ids, parameters out of
            range, or an object whose rows are in different rooms.
    """
    objects, frames = _check_inputs(objects, frames)
    room_of_row = _check_1d("room_of_row", room_of_row)
    if room_of_row.shape[0] != objects.shape[0]:
        raise ValueError(
            f"room_of_row must have one entry per row: got {room_of_row.shape[0]} for {objects.shape[0]} rows"
        )
    lam = _check_crop_number(crop_number)
    p = float(p_change_room)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p_change_room must be in [0, 1], got {p_change_room!r}")
    ratio = float(chunk_ratio_limit)
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"chunk_ratio_limit must be in (0, 1], got {chunk_ratio_limit!r}")

    order, clip_starts, clip_lens, video_starts = _clip_partition(objects, frames, lam, rng)

    # Room of every clip, via compact room indices 0..R-1 (one room per video).
    room_sorted = room_of_row[order]
    video_room = room_sorted[video_starts]
    video_sizes = np.diff(np.append(video_starts, order.shape[0]))
    if not np.array_equal(np.repeat(video_room, video_sizes), room_sorted):
        raise ValueError("room_of_row must be constant over the rows of each object (one room per category)")
    room_ids, video_room_idx = np.unique(video_room, return_inverse=True)
    video_room_idx = video_room_idx.reshape(-1).astype(np.int64, copy=False)
    clip_video = np.searchsorted(video_starts, clip_starts, side="right") - 1
    clip_room = video_room_idx[clip_video]
    n_rooms = room_ids.shape[0]
    n_clips = int(clip_starts.shape[0])
    n_use = min(n_clips, max(1, math.ceil(ratio * n_clips)))

    # Per-room shuffled queues, laid out room after room in one array.
    perm = rng.permutation(n_clips)
    queue = perm[np.argsort(clip_room[perm], kind="stable")]
    counts = np.bincount(clip_room, minlength=n_rooms).astype(np.int64)
    room_offset = np.concatenate(([0], np.cumsum(counts)[:-1]))

    # Voluntary-change boundaries (boundary b sits between stream clips b and b+1) and one
    # uniform per possible room draw: the start, every voluntary change, and at most R-1
    # forced changes (each forced change empties a room for good).
    change_at = np.flatnonzero(rng.random(max(n_use - 1, 0)) < p).tolist()
    uniforms = rng.random(len(change_at) + n_rooms + 1).tolist()

    rem = counts.tolist()
    ptr = [0] * n_rooms
    fen = _Fenwick(rem)
    total = n_clips
    # p = 0: a room must move on once it has supplied more than 80 % of its initial clips, i.e.
    # after ``cap`` clips, the smallest s with 5 s > 4 * initial (integer arithmetic, no rounding).
    cap = [(4 * c) // 5 + 1 for c in counts.tolist()] if p == 0 else None

    def draw(exclude: int, u: float) -> int:
        """Room drawn in proportion to remaining clips, skipping ``exclude`` (-1: none)."""
        excl_w = rem[exclude] if exclude >= 0 else 0
        avail = total - excl_w
        if avail <= 0:
            return exclude
        x = min(int(u * avail), avail - 1)
        if exclude >= 0 and x >= fen.prefix(exclude):
            x += excl_w
        return fen.find(x)

    ui = 0
    cur = draw(-1, uniforms[ui])
    ui += 1
    seg_room: list[int] = []
    seg_start: list[int] = []
    seg_len: list[int] = []
    t = 0  # clips used so far
    ci = 0  # next unused voluntary-change boundary
    n_change = len(change_at)
    while t < n_use:
        stop = (change_at[ci] + 1) if ci < n_change else n_use
        take = min(rem[cur], stop - t, n_use - t)
        if cap is not None:
            take = min(take, max(1, cap[cur] - ptr[cur]))
        seg_room.append(cur)
        seg_start.append(ptr[cur])
        seg_len.append(take)
        ptr[cur] += take
        rem[cur] -= take
        fen.add(cur, -take)
        total -= take
        t += take
        if t >= n_use:
            break
        move = rem[cur] == 0 or (cap is not None and ptr[cur] >= cap[cur])  # forced
        if ci < n_change and change_at[ci] == t - 1:
            ci += 1
            move = True  # voluntary
        if move:
            if ui == len(uniforms):  # only the p = 0 rule can need more draws than were made up front
                uniforms.extend(rng.random(n_rooms + 1).tolist())
            cur = draw(cur, uniforms[ui])
            ui += 1

    # Stream order of clips -> frame rows, all vectorised.
    seg_room_a = np.asarray(seg_room, dtype=np.int64)
    seg_len_a = np.asarray(seg_len, dtype=np.int64)
    seg_q = room_offset[seg_room_a] + np.asarray(seg_start, dtype=np.int64)
    stream_clips = queue[_ranges(seg_q, seg_len_a)]
    lens = clip_lens[stream_clips]
    rows = order[_ranges(clip_starts[stream_clips], lens)].astype(np.int64, copy=False)
    room = np.repeat(room_ids[clip_room[stream_clips]].astype(np.int64), lens)
    clip = np.repeat(np.arange(stream_clips.shape[0], dtype=np.int64), lens)
    return Stream(rows=rows, room=room, clip=clip, n_clips_total=n_clips)


def video_stream(objects: np.ndarray, frames: np.ndarray, room_of_row: np.ndarray) -> Stream:
    """Every row once, video after video (objects in ascending id order, frames in order), each
    video one clip: the anchors of the within-video sampling modes, which build no stream (no clips
    are cut, no room walk, no ``chunk_ratio_limit``, no random draw; as the original).

    Args:
        objects, frames: ``(N,)`` integer object id and frame index of each row.
        room_of_row: ``(N,)`` integer room id of each row (kept in :attr:`Stream.room`).

    Returns:
        :class:`Stream` of length ``N`` whose clip ``k`` is the k-th video.
    """
    objects, frames = _check_inputs(objects, frames)
    room_of_row = _check_1d("room_of_row", room_of_row)
    if room_of_row.shape[0] != objects.shape[0]:
        raise ValueError(
            f"room_of_row must have one entry per row: got {room_of_row.shape[0]} for {objects.shape[0]} rows"
        )
    order, video_starts = _video_order(objects, frames)
    sizes = np.diff(np.append(video_starts, order.shape[0]))
    clip = np.repeat(np.arange(video_starts.shape[0], dtype=np.int64), sizes)
    return Stream(rows=order.astype(np.int64, copy=False), room=room_of_row[order].astype(np.int64), clip=clip,
                  n_clips_total=int(video_starts.shape[0]))


def positive_positions(
    anchors: np.ndarray, length: int, rotation_range: int, rng: np.random.Generator
) -> np.ndarray:
    """Temporal positives: ``clamp(anchor + s, 0, length - 1)``, ``s ~ U{-w, ..., w}``.

    Args:
        anchors: ``(B,)`` integer stream positions in ``[0, length - 1]``.
        length: stream length ``L >= 1``.
        rotation_range: ``w >= 0``, the largest temporal offset.
        rng: random generator (one integer draw per anchor).

    Returns:
        int64 ``(B,)`` positive positions.
    """
    anchors = _check_1d("anchors", anchors).astype(np.int64, copy=False)
    length = int(length)
    w = int(rotation_range)
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if w < 0:
        raise ValueError(f"rotation_range must be >= 0, got {rotation_range}")
    if anchors.size and (anchors.min() < 0 or anchors.max() >= length):
        raise ValueError(f"anchors must lie in [0, {length - 1}]")
    s = rng.integers(-w, w + 1, size=anchors.shape[0], dtype=np.int64)
    return np.clip(anchors + s, 0, length - 1)


def _jump(stream: Stream, anchors: np.ndarray, s: np.ndarray, p_change_room: float, rng: np.random.Generator) -> np.ndarray:
    """``interval_uniform`` (see the module docstring): positives of ``anchors`` at offsets ``s``.

    Draws, per round of the positives still walking: one uniform each for the room change, then one
    each for the clip (uniform among the chosen side's clips; "another room" falls back to the
    anchor's room when the stream has no other)."""
    starts, lens = stream.clip_bounds()
    clip_room = stream.room[starts]
    room_ids, room_idx = np.unique(clip_room, return_inverse=True)
    room_idx = room_idx.reshape(-1)
    by_room = np.argsort(room_idx, kind="stable")  # clips grouped room after room
    counts = np.bincount(room_idx, minlength=room_ids.shape[0])
    offset = np.concatenate(([0], np.cumsum(counts)[:-1]))
    n_clips = starts.shape[0]

    c = stream.clip[anchors]
    t = anchors - starts[c] + s  # offset from the start of the anchor's clip
    out = anchors + s
    forward = t >= lens[c]
    backward = t < 0
    todo = np.flatnonzero(forward | backward)
    home = room_idx[c[todo]]  # the anchor's room (compared at every jump, as the original)
    fwd = forward[todo]
    left = np.where(fwd, t[todo] - lens[c[todo]], -t[todo] - 1)  # steps still to walk past the clip's edge
    while todo.size:
        change = rng.random(todo.size) < p_change_room
        u = rng.random(todo.size)
        own = counts[home]
        others = n_clips - own
        change &= others > 0
        side = np.where(change, others, own)
        x = np.minimum((u * side).astype(np.int64), side - 1)
        x = np.where(change, np.where(x >= offset[home], x + own, x), offset[home] + x)
        dest = by_room[x]
        n = lens[dest]
        land = left < n
        pos = np.where(fwd, starts[dest] + left, starts[dest] + n - 1 - left)
        out[todo[land]] = pos[land]
        keep = ~land
        todo, home, fwd, left = todo[keep], home[keep], fwd[keep], left[keep] - n[keep]
    return out


def sample_positives(
    stream: Stream,
    anchors: np.ndarray,
    mode: str,
    rotation_range: int,
    rng: np.random.Generator,
    p_change_room: float = 0.0,
) -> np.ndarray:
    """Positive stream positions of ``anchors`` in sampling ``mode`` (see the module docstring).

    Args:
        stream: the stream (:func:`build_stream`; :func:`video_stream` for the within-video modes,
            whose positives stay in the anchor's clip).
        anchors: ``(B,)`` integer stream positions.
        mode: one of :data:`SAMPLING_MODES`.
        rotation_range: ``w >= 0``, the largest temporal offset (``interval`` modes only).
        rng: random generator. ``interval`` draws exactly what :func:`positive_positions` draws;
            ``interval_uniform`` draws the same offsets first, then the jumps; ``uniform`` one frame
            per anchor; ``randomwalk`` and ``last`` draw nothing.
        p_change_room: probability in ``[0, 1]`` that a jump out of the clip lands in another room
            (``interval_uniform`` only).

    Returns:
        int64 ``(B,)`` positive positions.
    """
    length = len(stream)
    if mode == "interval":
        return positive_positions(anchors, length, rotation_range, rng)
    if mode not in SAMPLING_MODES:
        raise ValueError(f"sampling mode must be one of {', '.join(SAMPLING_MODES)}, got {mode!r}")
    anchors = _check_1d("anchors", anchors).astype(np.int64, copy=False)
    if anchors.size and (anchors.min() < 0 or anchors.max() >= length):
        raise ValueError(f"anchors must lie in [0, {length - 1}]")
    if mode == "interval_uniform":
        w = int(rotation_range)
        if w < 0:
            raise ValueError(f"rotation_range must be >= 0, got {rotation_range}")
        p = float(p_change_room)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p_change_room must be in [0, 1], got {p_change_room!r}")
        s = rng.integers(-w, w + 1, size=anchors.shape[0], dtype=np.int64)
        return _jump(stream, anchors, s, p, rng)
    starts, lens = stream.clip_bounds()
    c = stream.clip[anchors]
    first, n = starts[c], lens[c]
    if mode == "uniform":
        return first + rng.integers(0, n, dtype=np.int64) if anchors.size else anchors.copy()
    if mode == "randomwalk":
        nxt = np.where(anchors < first + n - 1, anchors + 1, anchors - 1)
        return np.where(n > 1, nxt, anchors)
    return first + n - 1  # last
