"""kohya-exact bucketing: expected numbers are worked out by hand from kohya sd-scripts' definitions
(model_util.make_bucket_resolutions, train_util.BucketManager.select_bucket / round_to_steps,
trim_and_resize_if_required, DreamBoothDataset's reg repetition, train_network's step count)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from PIL import Image
from pydantic import ValidationError

from curator.buckets import (
    BucketAssignment,
    BucketItem,
    BucketSettings,
    assign_bucket,
    bucket_report,
    bucket_resolutions,
    kohya_reg_repeats,
    parse_resolution,
    step_math,
    widest_aspect,
)

SD15 = BucketSettings(resolution=(512, 512), min_bucket=256, max_bucket=1024, step=64)
SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "dataset"


# --------------------------------------------------------------------------------------------- bucket list


def test_bucket_list_512_by_hand():
    # area = 512*512 = 262144; square side = floor(sqrt(262144)/64)*64 = 512.
    # For w = 256..1024 step 64: h = min(1024, floor((262144 // w) / 64) * 64), kept (and mirrored) if h >= 256:
    #   256: 1024//64*64 = 1024   320: 819 -> 768   384: 682 -> 640   448: 585 -> 576   512: 512
    #   576: 455 -> 448   640: 409 -> 384   704: 372 -> 320   768: 341 -> 320
    #   832: 315 -> 256   896: 292 -> 256   960: 273 -> 256   1024: 256 -> 256
    expected = [
        (256, 832),
        (256, 896),
        (256, 960),
        (256, 1024),
        (320, 704),
        (320, 768),
        (384, 640),
        (448, 576),
        (512, 512),
        (576, 448),
        (640, 384),
        (704, 320),
        (768, 320),
        (832, 256),
        (896, 256),
        (960, 256),
        (1024, 256),
    ]
    assert bucket_resolutions(SD15) == expected


def test_bucket_list_sdxl_contains_the_well_known_buckets():
    settings = BucketSettings(resolution=(1024, 1024), min_bucket=256, max_bucket=2048, step=64)
    resos = bucket_resolutions(settings)
    # 1048576 // 1152 = 910 -> 896; // 1216 = 862 -> 832; // 1344 = 780 -> 768; // 1536 = 682 -> 640
    for reso in [(1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216), (1344, 768), (1536, 640)]:
        assert reso in resos
    # 1088: 1048576 // 1088 = 963 -> 960, so (1088, 960) exists; no bucket exceeds the area
    assert (1088, 960) in resos
    assert all(w * h <= 1024 * 1024 for w, h in resos)
    assert resos == sorted(resos)
    assert all(w % 64 == 0 and h % 64 == 0 for w, h in resos)


def test_non_square_resolution_uses_its_area():
    # 768x512: area 393216, square side floor(sqrt(393216)=627.06 / 64) * 64 = 576
    settings = BucketSettings(resolution=(768, 512), min_bucket=256, max_bucket=1024)
    resos = bucket_resolutions(settings)
    assert (576, 576) in resos
    # w=768: 393216 // 768 = 512 -> (768, 512) and (512, 768)
    assert (768, 512) in resos and (512, 768) in resos


def test_widest_aspect():
    # the most extreme 512 buckets are 1024x256 / 256x1024: 4.0
    assert widest_aspect(SD15) == 4.0
    assert widest_aspect(SD15.model_copy(update={"no_upscale": True})) == math.inf


# --------------------------------------------------------------------------------------------- assignment


def test_square_exact_size():
    a = assign_bucket(512, 512, SD15)
    assert a == BucketAssignment(
        bucket=(512, 512), resized=(512, 512), crop=(0, 0), ar_error=0.0, upscaled=False
    )


def test_landscape_3_2():
    # ar 1.5; nearest bucket ARs: 640/384 = 1.667 (err .167), 576/448 = 1.286 (err .214) -> 640x384.
    # image ar 1.5 < 1.667 -> scale to the bucket width: 640/768 = .8333; height int(512*.8333 + .5) = 427.
    # centre crop: top = (427 - 384) // 2 = 21.
    a = assign_bucket(768, 512, SD15)
    assert a.bucket == (640, 384)
    assert a.resized == (640, 427)
    assert a.crop == (0, 21)
    assert a.ar_error == pytest.approx(640 / 384 - 1.5)
    assert not a.upscaled


def test_portrait_small_is_upscaled():
    # 300x380: ar .7895; 448/576 = .7778 (err .0117) beats 512/512 (err .21) and 384/640 = .6 -> 448x576.
    # ar .7895 > .7778 -> match heights: scale 576/380 = 1.5158; width int(300*1.5158 + .5) = int(455.24) = 455.
    # crop left = (455 - 448) // 2 = 3; the image is enlarged.
    a = assign_bucket(300, 380, SD15)
    assert (a.bucket, a.resized, a.crop, a.upscaled) == ((448, 576), (455, 576), (3, 0), True)
    assert a.ar_error == pytest.approx(448 / 576 - 300 / 380)


def test_wide_panorama():
    # 1000x312: ar 3.205; 832/256 = 3.25 (err .045), 896/256 = 3.5, 768/320 = 2.4 -> 832x256.
    # ar < 3.25 -> scale 832/1000 = .832; height int(312*.832 + .5) = int(260.08) = 260; crop top (260-256)//2 = 2.
    a = assign_bucket(1000, 312, SD15)
    assert (a.bucket, a.resized, a.crop, a.upscaled) == ((832, 256), (832, 260), (0, 2), False)


def test_extreme_aspect_loses_most_of_the_width():
    # 3000x100: ar 30, widest bucket 1024x256 (ar 4). ar > 4 -> match heights: scale 256/100 = 2.56,
    # resized 7680x256, crop left (7680 - 1024) // 2 = 3328. ar_error = 4 - 30 = -26.
    a = assign_bucket(3000, 100, SD15)
    assert (a.bucket, a.resized, a.crop, a.upscaled) == ((1024, 256), (7680, 256), (3328, 0), True)
    assert a.ar_error == pytest.approx(-26.0)


def test_tall_extreme():
    # 100x3000 mirrors the case above: 256x1024, resized 256x7680, crop top 3328.
    a = assign_bucket(100, 3000, SD15)
    assert (a.bucket, a.resized, a.crop) == ((256, 1024), (256, 7680), (0, 3328))


def test_no_upscale_large_landscape():
    # 768x512 > area 262144: resized_width = sqrt(262144*1.5) = 627.06 -> round_to_steps: 627 - 627%64 = 576,
    # height for it 576/1.5 = 384 (ar 1.5 exactly); height-first: 418.05 -> 418 - 34 = 384, width 576 (ar 1.5).
    # Errors tie, so kohya takes the height-first branch: resized (int(384*1.5 + .5), 384) = (576, 384).
    s = SD15.model_copy(update={"no_upscale": True})
    a = assign_bucket(768, 512, s)
    assert (a.bucket, a.resized, a.crop, a.upscaled) == ((576, 384), (576, 384), (0, 0), False)


def test_no_upscale_small_image_keeps_its_size_and_is_cropped():
    # 200x200 under the area: no resize; bucket = 200 - 200 % 64 = 192; crop (200-192)//2 = 4 each side.
    s = SD15.model_copy(update={"no_upscale": True})
    a = assign_bucket(200, 200, s)
    assert (a.bucket, a.resized, a.crop, a.upscaled) == ((192, 192), (200, 200), (4, 4), False)
    assert a.usable


def test_no_upscale_big_square_and_unusable_tiny():
    s = SD15.model_copy(update={"no_upscale": True})
    # 1411x1411 (retina): sqrt(262144 * 1) = 512 exactly -> 512x512
    assert assign_bucket(1411, 1411, s).bucket == (512, 512)
    # 50x50 is narrower than one step: bucket 0x0, which kohya cannot train on
    tiny = assign_bucket(50, 50, s)
    assert tiny.bucket == (0, 0) and not tiny.usable


def test_no_upscale_ignores_min_and_max_bucket():
    # 3000x100 with no_upscale: area 300000 > 262144; width-first sqrt(262144*30) = 2804.4 -> 2752 (height 2752/30 = 91.7 -> 64,
    # ar 43); height-first 93.5 -> 64, width 1920 (ar 30, exact) -> resized (1920, 64), bucket 1920x64:
    # far outside min 256 / max 1024, as kohya does with --bucket_no_upscale.
    s = SD15.model_copy(update={"no_upscale": True})
    assert assign_bucket(3000, 100, s).bucket == (1920, 64)


def test_assignment_is_cached_and_rejects_nonsense():
    assert assign_bucket(640, 480, SD15) is assign_bucket(640, 480, SD15)
    with pytest.raises(ValueError, match="not a real image size"):
        assign_bucket(0, 480, SD15)


def test_sample_photographs():
    # the real files in examples/: their sizes come from the image headers
    with Image.open(SAMPLE / "10_kilnsample photo" / "deep_field.jpg") as im:
        size = im.size
    # 1000x872: ar 1.1468; 576/448 = 1.2857 (err .1389) beats 512/512 (err .1468) -> 576x448.
    # ar < 1.2857 -> scale 576/1000; height int(872*.576 + .5) = int(502.77) = 502; crop top (502-448)//2 = 27.
    assert size == (1000, 872)
    a = assign_bucket(*size, SD15)
    assert (a.bucket, a.resized, a.crop) == ((576, 448), (576, 502), (0, 27))


# --------------------------------------------------------------------------------------------- settings


def test_settings_validation_names_the_field_and_fix():
    with pytest.raises(ValidationError, match="min_bucket 1024 is larger than max_bucket 512"):
        BucketSettings(resolution=(512, 512), min_bucket=1024, max_bucket=512)
    with pytest.raises(ValidationError, match="step must be a positive"):
        BucketSettings(step=0)
    with pytest.raises(
        ValidationError, match=r"resolution 1000x1000 is not a multiple of step 64.*use 960,960"
    ):
        BucketSettings(resolution=(1000, 1000), max_bucket=1024)
    with pytest.raises(
        ValidationError, match="max_bucket 1024 is smaller than the resolution's long side 2048"
    ):
        BucketSettings(resolution=(2048, 2048))
    with pytest.raises(
        ValidationError, match="min_bucket 768 is larger than the resolution's short side 512"
    ):
        BucketSettings(resolution=(512, 512), min_bucket=768)


def test_settings_kohya_rounding_of_min_and_max():
    # kohya: min rounded down to a multiple of step (250 -> 192), max rounded up (1000 -> 1024)
    s = BucketSettings(resolution=(512, 512), min_bucket=250, max_bucket=1000)
    assert (s.min_bucket, s.max_bucket) == (192, 1024)
    assert any("rounds it down to 192" in n for n in s.notes)
    assert any("rounds it up to 1024" in n for n in s.notes)


def test_parse_resolution():
    assert parse_resolution("1024") == (1024, 1024)
    assert parse_resolution("832,1216") == (832, 1216)
    assert parse_resolution("768x512") == (768, 512)
    with pytest.raises(ValueError, match="not a number"):
        parse_resolution("big")
    assert BucketSettings(resolution="768,512", max_bucket=1024).resolution == (768, 512)


# --------------------------------------------------------------------------------------------- reg + report


def test_reg_repeats_fill_up_to_the_train_count():
    # train 10 images x 10 = 100; 30 reg images x 1: first pass 30, then +1 each: 60, 90, then the first 10
    # get a 4th -> [4]*10 + [3]*20 = 40 + 60 = 100.
    assert kohya_reg_repeats([1] * 30, 100) == [4] * 10 + [3] * 20
    # more reg than train: the first pass stops at 20; the other 30 reg images are not used at all
    assert kohya_reg_repeats([1] * 50, 20) == [1] * 20 + [0] * 30
    # repeats 2: 2, 4, 6 >= 5 -> stops after the third, overshooting to 6
    assert kohya_reg_repeats([2, 2, 2, 2], 5) == [2, 2, 2, 0]
    # no train images: no reg image is used
    assert kohya_reg_repeats([1, 1], 0) == [0, 0]


def test_bucket_report_counts_repeats_reg_upscaled_and_thin():
    items = [
        BucketItem("10_a/one.png", 512, 512, repeats=10),
        BucketItem("10_a/two.png", 1024, 1024, repeats=10),
        BucketItem("10_a/three.png", 600, 400, repeats=10),  # ar 1.5 -> 640x384, upscaled (427 > 400)
        BucketItem("reg/1_b/r1.png", 512, 512, repeats=1, is_reg=True),
        BucketItem("reg/1_b/r2.png", 300, 380, repeats=1, is_reg=True),  # -> 448x576, upscaled
        {"path": "0_skip/x.png", "width": 512, "height": 512, "repeats": 0},  # kohya ignores repeats < 1
    ]
    report = bucket_report(items, SD15)
    # train with repeats = 3 * 10 = 30; reg: 2 x 1 = 2, kohya fills to 30: r1 = 15, r2 = 15
    assert report.train_with_repeats == 30
    assert report.reg_with_repeats == 2
    assert report.reg_used_with_repeats == 30
    by_bucket = {b.bucket: b for b in report.buckets}
    # 512x512: one, two (10 each) + r1 (15) = 35 from 3 images
    assert (by_bucket[(512, 512)].images, by_bucket[(512, 512)].with_repeats) == (3, 35)
    assert (by_bucket[(512, 512)].train_images, by_bucket[(512, 512)].reg_images) == (2, 1)
    assert by_bucket[(640, 384)].with_repeats == 10
    assert by_bucket[(448, 576)].with_repeats == 15
    assert report.total_with_repeats == 60
    assert by_bucket[(512, 512)].share == pytest.approx(35 / 60)
    assert sorted(i.path for i in report.upscaled) == ["10_a/three.png", "reg/1_b/r2.png"]
    assert sorted(b.bucket for b in report.thin) == [(448, 576), (640, 384)]
    assert [b.bucket for b in report.buckets] == sorted(by_bucket)


def test_bucket_report_unusable_no_upscale_images_are_kept_out_of_buckets():
    s = SD15.model_copy(update={"no_upscale": True})
    report = bucket_report([BucketItem("a.png", 50, 40), BucketItem("b.png", 512, 512)], s)
    assert [i.path for i in report.unusable] == ["a.png"]
    assert [(b.bucket, b.images) for b in report.buckets] == [((512, 512), 1)]


# --------------------------------------------------------------------------------------------- steps


def test_step_math_per_bucket_batches():
    counts = {(512, 512): 30, (640, 384): 25, (448, 576): 3}
    # batch 4: ceil(30/4) = 8, ceil(25/4) = 7, ceil(3/4) = 1 -> 16 batches; all three end with a partial batch
    m = step_math(counts, batch_size=4, epochs=10)
    assert (m.batches_per_epoch, m.partial_batches, m.steps_per_epoch, m.total_steps) == (16, 3, 16, 160)
    assert m.with_repeats == 58
    # a naive ceil(58/4) = 15 would be wrong: kohya never mixes buckets in a batch
    assert m.batches_per_epoch != math.ceil(58 / 4)
    # gradient accumulation 3: ceil(16/3) = 6 optimizer steps per epoch -> 60 for 10 epochs
    assert step_math(counts, batch_size=4, epochs=10, gradient_accumulation=3).total_steps == 60
    # target 1000 steps: ceil(1000/16) = 63 epochs
    m = step_math(counts, batch_size=4, max_steps=1000)
    assert (m.epochs, m.total_steps) == (63, 1000)
    # epochs override max_steps (kohya: --max_train_epochs wins)
    assert step_math(counts, batch_size=4, epochs=2, max_steps=1000).total_steps == 32


def test_step_math_over_several_processes_counts_global_batches():
    counts = {(512, 512): 30, (640, 384): 25, (448, 576): 3}
    # batch 2 on each of 2 processes: 4 samples per batch, exactly the one-process batch 4 count
    two = step_math(counts, batch_size=2, epochs=10, num_processes=2)
    assert (two.global_batch, two.batches_per_epoch, two.partial_batches, two.total_steps) == (4, 16, 3, 160)
    assert two.batches_for(30) == 8 and two.to_dict()["num_processes"] == 2
    # not the per-process count (ceil(30/2) + ceil(25/2) + ceil(3/2) = 30 batches)
    assert two.batches_per_epoch != step_math(counts, batch_size=2, epochs=10).batches_per_epoch
    with pytest.raises(ValueError, match="num_processes must be a whole number >= 1"):
        step_math(counts, batch_size=2, num_processes=0)


def test_step_math_from_report_and_bad_input():
    report = bucket_report([BucketItem("a.png", 512, 512, repeats=5)], SD15)
    assert step_math(report, batch_size=2).batches_per_epoch == 3  # ceil(5/2)
    assert step_math(report, batch_size=2).total_steps is None
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1"):
        step_math(report, batch_size=0)
    with pytest.raises(ValueError, match="epochs must be"):
        step_math(report, batch_size=1, epochs=0)


def test_halfway_aspect_follows_kohyas_float_arithmetic():
    # 800x700 = 8:7 lies halfway between 1:1 and 576x448 = 9:7. In float64 |1 - 8/7| = 0.1428571428571428 is a
    # hair smaller than |9/7 - 8/7| = 0.14285714285714302, so kohya's argmin (and kiln) pick 512x512.
    # ar 1.143 > 1 -> match heights: scale 512/700, width int(800*512/700 + .5) = int(585.6) = 585, crop 36.
    a = assign_bucket(800, 700, SD15)
    assert (a.bucket, a.resized, a.crop) == ((512, 512), (585, 512), (36, 0))


def test_images_without_a_usable_size_are_left_out_and_listed():
    items = [
        BucketItem("a/ok.png", 512, 512),
        BucketItem("a/empty.png", 0, 0),  # a 0-byte file: the index has no size
        BucketItem("a/cut.jpg", 640, 480, readable=False),  # header size known, pixels broken
        {"path": "a/m.png", "width": 0, "height": 10},
    ]
    report = bucket_report(items, SD15)
    assert report.unreadable == ["a/empty.png", "a/cut.jpg", "a/m.png"]
    assert [i.path for i in report.images] == ["a/ok.png"]
    assert report.total_with_repeats == 1
    assert record_bucket_of_broken() is None


def record_bucket_of_broken() -> tuple[int, int] | None:
    from curator.buckets import record_bucket
    from curator.layout import Subset
    from curator.records import Flag, ImageRecord

    subset = Subset(image_dir=SAMPLE, rel_dir="", repeats=1, class_tokens="", is_reg=False,
                    caption_extension=".txt", keep_tokens=0)
    record = ImageRecord("cut.jpg", subset, 10, 0, "", 640, 480, "JPEG", "RGB", 1, False, None,
                         [Flag("cut.jpg", "truncated", "")])
    assert record_bucket(ImageRecord("ok.jpg", subset, 10, 0, "", 640, 480, "JPEG", "RGB", 1, False, None),
                         SD15) is not None
    return record_bucket(record, SD15)
