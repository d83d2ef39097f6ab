"""runtime.policy.preprocess against the Hugging Face CLIP processor configured like Kosmos-2's."""

import numpy as np
import pytest
from PIL import Image

from runtime.cameras.sample_frames import sample_frame
from runtime.policy.preprocess import CLIP_MEAN, CLIP_STD, preprocess_frame, resize_rgb


@pytest.fixture(scope="module")
def hf_processor():
    transformers = pytest.importorskip("transformers")
    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls(size={"height": 224, "width": 224}, do_center_crop=False, resample=Image.BICUBIC,
               image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))


def hf_uint8(processor, rgb):
    out = processor(images=Image.fromarray(rgb), do_rescale=False, do_normalize=False, return_tensors="np")
    return out["pixel_values"][0].transpose(1, 2, 0).astype(np.float64)


@pytest.mark.parametrize("order", ["bgr", "rgb"])
def test_resize_matches_hf_bicubic_on_a_1280x720_frame(hf_processor, order):
    bgr = sample_frame(seed=3, height=720, width=1280)
    rgb = bgr[..., ::-1].copy()
    reference = hf_uint8(hf_processor, rgb)
    ours = resize_rgb(bgr if order == "bgr" else rgb, order, 224).astype(np.float64)
    diff = np.abs(ours - reference)
    assert diff.mean() <= 2.0, diff.mean()
    assert diff.max() <= 16.0, diff.max()


def test_normalised_pixels_match_hf(hf_processor):
    bgr = sample_frame(seed=4, height=720, width=1280)
    ref = hf_processor(images=Image.fromarray(bgr[..., ::-1].copy()), return_tensors="np")["pixel_values"][0]
    ours = preprocess_frame(bgr, "bgr")
    assert ours.shape == (3, 224, 224) and ours.dtype == np.float32
    # 2/255 in pixel space is ~0.03 after dividing by the CLIP std
    assert np.abs(ours - ref).mean() < 2 / 255 / min(CLIP_STD)


def test_channel_order_is_explicit():
    bgr = np.zeros((300, 400, 3), np.uint8)
    bgr[..., 2] = 255  # pure red in BGR
    rgb_out = resize_rgb(bgr, "bgr", 224)
    assert rgb_out[..., 0].min() == 255 and rgb_out[..., 2].max() == 0
    assert np.array_equal(resize_rgb(bgr[..., ::-1].copy(), "rgb", 224), rgb_out)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((10, 10), np.uint8), r"\(H, W, 3\)"),
    (np.zeros((10, 10, 3), np.float32), "uint8"),
])
def test_bad_frames_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        preprocess_frame(bad)


def test_unknown_channel_order_is_refused():
    with pytest.raises(ValueError, match="channel_order"):
        preprocess_frame(np.zeros((10, 10, 3), np.uint8), "bgra")
