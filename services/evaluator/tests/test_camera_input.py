"""CameraSpec: the dataset's camera read from the processor's own output, its frames prepared as the
processor and the loader made them (checked against the real processor on the same video), and the
CARLA sensor it describes (checked against the `carla` package's own rotation vectors)."""

from __future__ import annotations

import json
import math

import av
import carla
import numpy as np
import pytest
import simplejpeg
from sd_common.session_format import barcode
from sd_common.session_format.scene import rotation
from sd_common.session_format.synth import SynthConfig, synth_session
from sd_common.session_format.video import luma_view
from sd_processor.config import ProcessorConfig
from sd_processor.export import DirectorySink
from sd_processor.pipeline import process_session

from sd_evaluator.camera_input import CameraMount, CameraSpec, CameraSpecError, Crop

# Mean absolute difference (grey levels, 0-255) allowed between prepare() on a decoded RGB frame and the
# processor's JPEG of the same frame: the processor scales the 4:2:0 YUV planes (chroma at half resolution)
# and encodes a JPEG at quality 90; prepare() takes the RGB frame through the same 4:2:0 steps, but the video
# was decoded to RGB once more. Measured: 1.1-1.2 enlarged, 2.2-2.4 shrunk to 64x64, 1.8 resized on to a
# 48x48 network input as the loader does; a crop
# shifted by 4 recording pixels gives several times more (asserted below).
MEAN_ABS_TOLERANCE = 3.0


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """A 6 s 256x144 synthetic session (one exported 5 s segment), its decoded frames by frame id."""
    truth = synth_session(tmp_path_factory.mktemp("cam"), SynthConfig(width=256, height=144, duration_s=6.0,
                                                                       seed=11))
    manifest = json.loads((truth.session_dir / "manifest.json").read_text())
    cell = manifest["barcode"]["cell_px"]
    frames: dict[int, np.ndarray] = {}
    with av.open(str(truth.session_dir / "video.webm")) as container:
        for frame in container.decode(video=0):
            fid = barcode.read(luma_view(frame), cell)
            if fid is not None and fid not in frames:
                frames[fid] = frame.to_ndarray(format="rgb24")
    return truth, manifest, frames


def _processed(session, tmp_path, **config):
    truth, _, _ = session
    out = tmp_path / "out"
    process_session(truth.session_dir, DirectorySink(out), config=ProcessorConfig(**config), attempt_id="cam")
    qc = json.loads((out / "qc_report.json").read_text())
    segments = json.loads((out / "segments.json").read_text())
    seg = next(s for s in qc["segment_details"] if s["accepted"])
    return out, segments, seg


def _mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _compare(spec: CameraSpec, session, out, seg, every: int = 15) -> list[float]:
    _, _, frames = session
    errors = []
    for k, fid in list(enumerate(seg["frame_ids"]))[::every]:
        jpeg = (out / seg["segment_id"] / "rgb_front" / f"{k:05d}.jpg").read_bytes()
        theirs = simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
        ours = spec.prepare(frames[fid])
        assert ours.shape == theirs.shape and ours.dtype == np.uint8
        errors.append(_mean_abs(ours, theirs))
    return errors


@pytest.mark.parametrize("size", [(256, 256), (64, 64)], ids=["enlarged-bicubic", "shrunk-area"])
def test_prepare_matches_the_processors_output_on_the_same_video(session, tmp_path, size):
    _, manifest, _ = session
    out, segments, seg = _processed(session, tmp_path, output_width=size[0], output_height=size[1])
    spec = CameraSpec.from_segments(segments)
    assert (spec.output_width, spec.output_height) == size == (spec.input_width, spec.input_height)
    assert spec.crop.to_dict() == segments["crop"]
    errors = _compare(spec, session, out, seg)
    assert len(errors) >= 8 and max(errors) < MEAN_ABS_TOLERANCE, errors
    # The tolerance tells a right crop from one 4 recording pixels off.
    c = spec.crop
    shifted = CameraSpec(**{**{f: getattr(spec, f) for f in ("recording_width", "recording_height", "fov_deg",
                                                           "mount", "output_width", "output_height",
                                                           "input_width", "input_height")},
                            "crop": Crop(c.x + 4, c.y, c.width, c.height)})
    assert min(_compare(shifted, session, out, seg)) > 2 * max(errors)


def test_the_spec_is_the_recordings_camera(session, tmp_path):
    _, manifest, _ = session
    _, segments, _ = _processed(session, tmp_path)
    spec = CameraSpec.from_segments(segments, input_size=(48, 64))
    assert (spec.recording_width, spec.recording_height) == (256, 144)
    assert spec.fov_deg == pytest.approx(manifest["camera"]["intrinsics"]["fov_deg"], abs=1e-3)
    assert spec.mount == CameraMount(**manifest["camera"]["mount"])
    assert (spec.input_height, spec.input_width) == (48, 64)
    assert CameraSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    # a mount given explicitly wins over the document's; a document without one needs it given
    other = CameraMount(x_m=0.5, y_m=-0.2, z_m=1.6, pitch_deg=-3, yaw_deg=0, roll_deg=0)
    assert CameraSpec.from_segments(segments, other.to_dict()).mount == other
    with pytest.raises(CameraSpecError, match="no `mount`"):
        CameraSpec.from_segments({k: v for k, v in segments.items() if k != "mount"})


def test_prepare_resizes_to_the_network_as_the_loader_does(session, tmp_path):
    from sd_trainer.data import FrameDataset, FrameRecord

    _, _, frames = session
    out, segments, seg = _processed(session, tmp_path, output_width=64, output_height=64)
    spec = CameraSpec.from_segments(segments, input_size=(48, 48))
    path = out / seg["segment_id"] / "rgb_front" / "00000.jpg"
    record = FrameRecord(str(path), 0.0, 4, 0, 0.0, 0.0, 0.0, "s", seg["segment_id"])
    theirs = FrameDataset([record], 64, 64, 48, 48).picture(0).numpy().transpose(1, 2, 0)
    ours = spec.prepare(frames[seg["frame_ids"][0]])
    assert ours.shape == (48, 48, 3) and _mean_abs(ours, theirs) < MEAN_ABS_TOLERANCE
    # a plain resize of the whole recording instead of crop-then-resize is far off
    import torch.nn.functional as F
    import torch

    whole = torch.from_numpy(frames[seg["frame_ids"][0]].transpose(2, 0, 1).copy())[None].float()
    squashed = F.interpolate(whole, size=(48, 48), mode="bilinear", antialias=True)[0].round().byte()
    assert _mean_abs(squashed.numpy().transpose(1, 2, 0), theirs) > 2 * MEAN_ABS_TOLERANCE


def test_prepare_refuses_a_frame_of_another_size(session, tmp_path):
    _, segments, _ = _processed(session, tmp_path, output_width=64, output_height=64)
    spec = CameraSpec.from_segments(segments)
    with pytest.raises(CameraSpecError, match="expected a 256x144 RGB uint8 frame"):
        spec.prepare(np.zeros((144, 255, 3), np.uint8))
    with pytest.raises(CameraSpecError, match="RGB uint8"):
        spec.prepare(np.zeros((144, 256, 4), np.uint8))


def _spec(**mount) -> CameraSpec:
    return CameraSpec(recording_width=320, recording_height=180, fov_deg=100.0, mount=CameraMount(**mount),
                      crop=Crop(70, 0, 180, 180), output_width=64, output_height=64, input_width=64, input_height=64)


def test_from_dict_names_what_is_wrong():
    good = _spec().to_dict()
    with pytest.raises(CameraSpecError, match="camera has no `mount` object"):
        CameraSpec.from_dict({k: v for k, v in good.items() if k != "mount"})
    with pytest.raises(CameraSpecError, match=r"camera.crop lacks \['height'\]"):
        CameraSpec.from_dict({**good, "crop": {"x": 0, "y": 0, "width": 10}})
    with pytest.raises(CameraSpecError, match="recording.fov_deg='wide' is not a finite number"):
        CameraSpec.from_dict({**good, "recording": {**good["recording"], "fov_deg": "wide"}})
    with pytest.raises(CameraSpecError, match="not inside the 320x180 recording"):
        CameraSpec.from_dict({**good, "crop": {"x": 200, "y": 0, "width": 180, "height": 180}})
    with pytest.raises(CameraSpecError, match="must be an object"):
        CameraSpec.from_dict(None)


@pytest.mark.parametrize("mount", [
    {"x_m": 1.3, "y_m": 0.0, "z_m": 2.3},
    {"x_m": 0.8, "y_m": 0.4, "z_m": 1.6, "yaw_deg": 30.0},
    {"x_m": 1.0, "y_m": -0.3, "z_m": 2.0, "pitch_deg": -12.0, "yaw_deg": -20.0, "roll_deg": 5.0},
])
def test_carla_sensor_is_the_same_camera_in_carlas_axes(mount):
    sensor = _spec(**mount).carla_sensor("rgb_front")
    assert {k: sensor[k] for k in ("type", "id", "width", "height", "fov")} == {
        "type": "sensor.camera.rgb", "id": "rgb_front", "width": 320, "height": 180, "fov": 100.0}
    m = CameraMount(**mount)
    # Position: CARLA's y points right, ours left.
    assert (sensor["x"], sensor["y"], sensor["z"]) == (m.x_m, -m.y_m, m.z_m)
    # Orientation: the camera's forward, left and up axes (ours, columns of the session format's rotation)
    # must equal CARLA's forward, -right and up vectors of the sensor's rotation, mirrored into our frame.
    ours = rotation(m.yaw_deg, m.pitch_deg, m.roll_deg)
    rot = carla.Rotation(pitch=sensor["pitch"], yaw=sensor["yaw"], roll=sensor["roll"])

    def mirrored(v):
        return np.array([v.x, -v.y, v.z])

    np.testing.assert_allclose(mirrored(rot.get_forward_vector()), ours[:, 0], atol=1e-6)
    np.testing.assert_allclose(-mirrored(rot.get_right_vector()), ours[:, 1], atol=1e-6)
    np.testing.assert_allclose(mirrored(rot.get_up_vector()), ours[:, 2], atol=1e-6)
    assert math.isfinite(sensor["fov"])


def test_the_trainers_camera_entry_reads_as_the_same_spec(session, tmp_path):
    """The trainer writes `state["camera"]` as plain data from segments.json; it must read back as the spec
    made from the same document here."""
    from sd_trainer.data import _session_geometry

    _, segments, _ = _processed(session, tmp_path, output_width=64, output_height=64)
    folder = tmp_path / "root" / "processed" / "s1"
    folder.mkdir(parents=True)
    (folder / "segments.json").write_text(json.dumps(segments))
    entry = _session_geometry(tmp_path / "root", "s1").camera(48, 32)
    assert CameraSpec.from_dict(entry) == CameraSpec.from_segments(segments, input_size=(48, 32))
    # an older document without a mount gives no camera entry (the model agent then refuses the checkpoint)
    (folder / "segments.json").write_text(json.dumps({k: v for k, v in segments.items() if k != "mount"}))
    assert _session_geometry(tmp_path / "root", "s1").camera(64, 64) is None
