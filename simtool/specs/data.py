"""Specs for ``simtool build-data``."""

from __future__ import annotations

from typing import Annotated, List, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from simtool.specs.base import Spec


class SplitSpec(Spec):
    """Fractions of objects per category that go to each split (split by object, never by frame)."""

    train: float = Field(0.8, ge=0, le=1)
    val: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> "SplitSpec":
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1 (train+val+test = {total:g})")
        return self


class ToyWorldSpec(Spec):
    """A procedurally rendered world: rooms × categories × objects × turntable frames.

    Category = a 3-D shape family, object = a variation within it (colour, texture,
    proportions), frame = turntable viewpoint. With ``room_backgrounds: false`` every room shares
    one background, so rooms (contexts) can only be learned from co-occurrence in time.
    """

    n_rooms: int = Field(4, ge=2, le=8)
    categories_per_room: int = Field(4, ge=1, le=8)
    objects_per_category: int = Field(60, ge=3, le=200)
    frames_per_object: int = Field(4, ge=2, le=360)
    image_size: int = Field(64, ge=16, le=512)
    room_backgrounds: bool = False
    hue_spread: float = Field(0.15, ge=0, le=1, description="object hues vary within ±spread/2 turn of their family's typical hue (1 = any hue)")
    image_format: Literal["png", "jpeg"] = "png"
    split: SplitSpec = SplitSpec(train=0.7, val=0.1, test=0.2)


def parse_fractions(value):
    """``"0.9,0.1"`` -> ``[0.9, 0.1]`` (lists pass through); used by every ``split`` option."""
    if isinstance(value, str) and value.strip() != "original":
        parts = [p for p in value.replace(";", ",").replace(" ", ",").split(",") if p]
        try:
            return [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"expected fractions like 0.9,0.1 or 0.8,0.1,0.1, got {value!r}") from None
    return value


def check_fractions(value):
    if isinstance(value, list):
        if len(value) not in (2, 3):
            raise ValueError("give 2 fractions (train, test) or 3 (train, val, test)")
        if any(v < 0 for v in value):
            raise ValueError("fractions must not be negative")
        if abs(sum(value) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1 (they sum to {sum(value):g})")
    return value


class _BuildBase(Spec):
    format: str  # each format's class narrows this to its Literal (kept first in the printed spec)
    source: Optional[str] = None
    out: str
    seed: int = 0


class ToyWorldBuildSpec(_BuildBase):
    """``--format toyworld``: the procedural toy world (no SRC)."""

    format: Literal["toyworld"]
    toyworld: ToyWorldSpec = ToyWorldSpec()


class _ImageBuildBase(_BuildBase):
    """Options of every format that reads image files: resizing, workers, resumable parts."""

    max_side: int = Field(320, ge=0, le=65535, description="resize so the longer side is at most this and re-encode as JPEG; 0 keeps the original bytes")
    quality: int = Field(90, ge=1, le=100, description="JPEG quality of re-encoded images")
    workers: int = Field(0, ge=0, le=256, description="decoding processes; 0 = one per CPU core (at most 16)")
    part_size: int = Field(20000, ge=1, description="images per resumable part (whole objects stay in one part)")


class MVImgNetOptions(Spec):
    require_cameras: bool = Field(False, description="skip objects whose sparse/ reconstruction is missing or empty")
    split: Union[Literal["original"], List[float]] = Field("original", description="original (every 10th object test, the one before it val) or fractions train,val,test of objects per category (seeded)")
    rooms: Optional[str] = Field(None, description="room assignment JSON (room name -> category ids; 'Uncertain' = dropped) stored as the semantic rooms")
    random_rooms: Optional[str] = Field(None, description="room assignment JSON stored as the random control (default: a seeded permutation of --rooms)")
    only_rooms: bool = Field(False, description="build only the categories that have a room in --rooms")
    categories: Optional[str] = Field(None, description="category names file (id,name per line); default SRC/mvimgnet_category.txt when present")

    _fractions = field_validator("split", mode="before")(parse_fractions)
    _check = field_validator("split")(check_fractions)


class MVImgNetBuildSpec(_ImageBuildBase):
    """``--format mvimgnet SRC``: SRC/[mvi_XX/]<category id>/<object id>/images/<frame>.jpg."""

    format: Literal["mvimgnet"]
    mvimgnet: MVImgNetOptions = MVImgNetOptions()


class ICDLOptions(Spec):
    rooms: Optional[str] = Field(None, description="room assignment JSON stored as the semantic rooms")
    random_rooms: Optional[str] = Field(None, description="room assignment JSON stored as the random control (default: a seeded permutation of --rooms)")
    categories: Optional[str] = Field(None, description="category names file (id,name per line); default SRC/mvimgnet_category.txt when present")


class ICDLBuildSpec(_ImageBuildBase):
    """``--format icdl SRC``: the original code's data_all.h5 + dataset_{train,val,test}_all3.parquet."""

    format: Literal["icdl"]
    icdl: ICDLOptions = ICDLOptions()


class ImageFolderOptions(Spec):
    split: List[float] = Field([0.5, 0.5], description="fractions of classes: train,test or train,val,test (seeded); ignored with a SRC/train, SRC/test split level")

    _fractions = field_validator("split", mode="before")(parse_fractions)
    _check = field_validator("split")(check_fractions)


class ImageFolderBuildSpec(_ImageBuildBase):
    """``--format imagefolder SRC``: SRC/<class>/<image>, or SRC/{train,val,test}/<class>/<image>."""

    format: Literal["imagefolder"]
    imagefolder: ImageFolderOptions = ImageFolderOptions()


class CUBBuildSpec(_ImageBuildBase):
    """``--format cub SRC``: CUB-200-2011, classes 1-100 train, 101-200 test."""

    format: Literal["cub"]


class CarsBuildSpec(_ImageBuildBase):
    """``--format cars SRC``: Cars196 (cars_annos.mat), classes 1-98 train, 99-196 test."""

    format: Literal["cars"]


class SOPBuildSpec(_ImageBuildBase):
    """``--format sop SRC``: Stanford Online Products, Ebay_train.txt / Ebay_test.txt."""

    format: Literal["sop"]


class TripletsOptions(Spec):
    preset: Optional[Literal["things", "yummly", "ihsj"]] = Field(None, description="a named collection read from SRC: things, yummly or ihsj")
    triplets: List[str] = Field([], description="triplet files (three ids per line; ihsj: the psiz observations HDF5)")
    kind: Optional[Literal["odd-one-out", "directed"]] = Field(None, description="odd-one-out: (a, b) most similar, c odd; directed: a anchor, b closer, c farther")
    images: Optional[str] = Field(None, description="folder of item images (file stem = item id)")
    items: Optional[str] = Field(None, description="items file with a header row: one row per item id in order (ids = row numbers unless it has an 'id' column)")
    id_column: Optional[str] = Field(None, description="column of --items holding the item ids (default: 'id' if present, else the row number)")
    name_column: Optional[str] = Field(None, description="column of --items holding the names (default: 'name' if present, else the first column)")
    catalog: Optional[str] = Field(None, description="ihsj: the psiz catalogue HDF5 (default: found under SRC)")
    split_by: Literal["triplet", "item"] = Field("triplet", description="split the triplets themselves, or the items (a triplet across item splits is dropped)")
    split: List[float] = Field([0.9, 0.1], description="fractions train,test or train,val,test (seeded)")

    _fractions = field_validator("split", mode="before")(parse_fractions)
    _check = field_validator("split")(check_fractions)

    @field_validator("triplets", mode="before")
    @classmethod
    def _one_or_more(cls, value):
        return [value] if isinstance(value, str) else value


class TripletsBuildSpec(_ImageBuildBase):
    """``--format triplets``: items (optionally with images) and triplet judgements."""

    format: Literal["triplets"]
    triplets: TripletsOptions = TripletsOptions()


class RoomsOptions(Spec):
    random: int = Field(2, ge=0, le=1000, description="number of seeded random assignments with the same room sizes")
    per_room: Optional[int] = Field(None, ge=1, description="categories per room (default: the smallest room's size); the rest go to 'Uncertain'")
    categories: Optional[str] = Field(None, description="category names file (id,name per line) to resolve category names in the table")


class RoomsBuildSpec(_BuildBase):
    """``--format rooms TABLE``: room assignment JSONs from a category -> room table."""

    format: Literal["rooms"]
    rooms: RoomsOptions = RoomsOptions()


BUILD_SPECS: dict[str, type[_BuildBase]] = {
    "toyworld": ToyWorldBuildSpec,
    "mvimgnet": MVImgNetBuildSpec,
    "icdl": ICDLBuildSpec,
    "imagefolder": ImageFolderBuildSpec,
    "cub": CUBBuildSpec,
    "cars": CarsBuildSpec,
    "sop": SOPBuildSpec,
    "triplets": TripletsBuildSpec,
    "rooms": RoomsBuildSpec,
}

# The build-data spec: a union discriminated by ``format`` (validate with pydantic.TypeAdapter, or
# pick the class from BUILD_SPECS as resolve_build_spec does).
BuildDataSpec = Annotated[Union[tuple(BUILD_SPECS.values())], Field(discriminator="format")]
