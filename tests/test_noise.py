"""Listening conditions: mixing level, noise files of any rate/channels, clear errors."""

import math
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from audiointerp.errors import AudioFileError, ConfigError
from audiointerp.noise import (
    CONDITIONS,
    GENERATED,
    NOISE_FILES,
    NoiseSpec,
    alpha_from_snr,
    generate_noise,
    load_noise,
    mix,
    mixing_alpha,
    noise_path,
    snr_db,
    snr_from_alpha,
    write_generated_noises,
)


def _sig(n=16000, seed=0, f=440.0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 16000
    return 0.3 * torch.sin(2 * math.pi * f * t) + 0.01 * torch.randn(n, generator=g)


@pytest.mark.parametrize("target", [-10.0, 0.0, 3.0, 12.5, 30.0])
def test_mix_hits_the_requested_snr(target):
    clip = torch.stack([_sig(seed=0), 0.01 * _sig(seed=1, f=1000.0)])  # loud and quiet clips alike
    noise = torch.randn(16000, generator=torch.Generator().manual_seed(2))
    out, c, n = mix(clip, noise, snr_db=target, return_parts=True)
    assert torch.allclose(out, c + n, atol=1e-6)
    assert torch.allclose(out.abs().amax(-1), torch.ones(2))  # peak-normalised
    got = snr_db(c, n)
    assert torch.all((got - target).abs() < 0.01), got


def test_default_alpha_is_the_prior_art_level():
    out, c, n = mix(_sig(), torch.randn(16000), return_parts=True)
    assert mixing_alpha() == 0.6
    assert float(snr_db(c, n)) == pytest.approx(20 * math.log10(1.5), abs=0.01)  # 3.52 dB
    assert snr_from_alpha(alpha_from_snr(7.0)) == pytest.approx(7.0)


def test_silent_clip_stays_silent_in_its_part():
    _, c, n = mix(torch.zeros(1000), torch.randn(1000), return_parts=True)
    assert c.abs().max() == 0 and n.abs().max() > 0


@pytest.mark.parametrize("kw, word", [({"snr_db": float("nan")}, "nan"), ({"snr_db": "loud"}, "loud"),
                                      ({"snr_db": 200}, "200"), ({"alpha": 1.5}, "1.5"), ({"alpha": 0}, "0"),
                                      ({"alpha": 0.5, "snr_db": 3}, "not both")])
def test_bad_levels_are_clear_errors(kw, word):
    with pytest.raises(ConfigError, match=word):
        mix(_sig(), torch.randn(16000), **kw)


def test_mix_rejects_silent_noise_and_length_mismatch():
    with pytest.raises(ConfigError, match="silent"):
        mix(_sig(), torch.zeros(16000))
    with pytest.raises(ConfigError, match="samples"):
        mix(_sig(), torch.randn(800))


def test_stereo_noise_at_an_odd_rate_is_downmixed_and_resampled(tmp_path):
    sr = 11025
    t = np.arange(int(1.5 * sr)) / sr
    left, right = np.sin(2 * np.pi * 500 * t), 0.5 * np.sin(2 * np.pi * 500 * t)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], 1).astype(np.float32) * 0.5, sr)
    wav = load_noise(path, 16000, 16000)
    assert wav.shape == (16000,) and wav.dtype == torch.float32
    spec = np.abs(np.fft.rfft(wav.numpy()))
    assert abs(np.argmax(spec) * 16000 / 16000 - 500) <= 1  # still a 500 Hz tone at the new rate
    assert float(wav.abs().max()) == pytest.approx(0.5 * 0.75, rel=0.02)  # mean of the channels


def test_offset_skips_and_short_noise_repeats(tmp_path):
    x = np.linspace(-0.5, 0.5, 8000, dtype=np.float32)
    path = tmp_path / "ramp.flac"
    sf.write(path, x, 16000)
    wav = load_noise(path, 16000, 20000, offset=0.25)
    assert np.allclose(wav[:4000].numpy(), x[4000:], atol=1e-4)
    assert np.allclose(wav[4000:8000].numpy(), x[4000:], atol=1e-4)  # repeated from the offset
    with pytest.raises(ConfigError, match="offset"):
        load_noise(path, 16000, 100, offset=0.6)


def test_bad_noise_paths_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="nowhere.wav") as err:
        NoiseSpec(str(tmp_path / "nowhere.wav")).validate()
    assert "valid conditions" in str(err.value) and "horse" in str(err.value)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(AudioFileError, match="bad.wav"):
        NoiseSpec(str(bad)).apply(torch.zeros(2, 100), 16000)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(1600, dtype=np.float32), 16000)
    with pytest.raises(ConfigError, match="silent"):
        NoiseSpec(str(silent)).apply(torch.zeros(1, 100), 16000)
    monkeypatch.delenv("AUDIOINTERP_NOISES", raising=False)
    with pytest.raises(ConfigError, match="AUDIOINTERP_NOISES"):
        NoiseSpec("white").validate()
    monkeypatch.setenv("AUDIOINTERP_NOISES", str(tmp_path))
    with pytest.raises(ConfigError, match="165058"):
        NoiseSpec("white").validate()


def test_labels_name_the_level():
    assert NoiseSpec().label == "clean" and NoiseSpec("horse").label == "horse"
    assert NoiseSpec("horse", alpha=0.6).label == "horse"
    assert NoiseSpec("white", snr_db=0).label == "white_snr0dB"
    assert NoiseSpec("room", alpha=0.8, offset=1.5).label == "room_alpha0.8_off1.5s"
    assert NoiseSpec("/x/my noise.wav").label == "file-my noise"
    assert set(CONDITIONS) == {"clean", *NOISE_FILES, *GENERATED, "mixture"}


def test_generated_noises_are_written_on_first_use_and_reproducible(tmp_path):
    written = write_generated_noises(tmp_path)
    for name, (colour, fname) in GENERATED.items():
        path = noise_path(name)  # generated into noises/ (or the cache) when missing
        assert path.is_file() and path.name == fname
        assert sf.read(path, dtype="float32")[0].tobytes() == sf.read(written[name], dtype="float32")[0].tobytes()
        data, sr = sf.read(written[name], dtype="float32")
        assert sr == 16000 and data.shape == (80000,)
        assert np.abs(data - generate_noise(colour, 80000, seed=0).numpy()).max() < 1 / 32768 + 1e-6, name
    pink = generate_noise("pink", 1 << 16, seed=0).numpy()
    spec = np.abs(np.fft.rfft(pink)) ** 2
    f = np.arange(len(spec))
    keep = (f >= 32) & (f < 16384)
    slope = np.polyfit(np.log2(f[keep]), 10 * np.log10(spec[keep]), 1)[0]
    assert slope == pytest.approx(-3.01, abs=0.2)  # -3 dB per octave (1/f power)
    with pytest.raises(ConfigError, match="purple"):
        generate_noise("purple", 10)


SHARED = os.environ.get("AUDIOINTERP_NOISES")


@pytest.mark.skipif(not (SHARED and all((os.path.join(SHARED, f) and os.path.isfile(os.path.join(SHARED, f)))
                                        for f in NOISE_FILES.values())), reason="AUDIOINTERP_NOISES not available")
@pytest.mark.parametrize("name", list(NOISE_FILES))
def test_real_noises_mix_at_the_requested_snr(name):
    spec = NoiseSpec(name, snr_db=3.0).validate()
    noise = load_noise(os.path.join(SHARED, NOISE_FILES[name]), 16000, 80000)
    assert noise.shape == (80000,) and float(noise.abs().max()) > 0
    clip = _sig(80000)
    _, c, n = mix(clip, noise, snr_db=3.0, return_parts=True)
    assert abs(float(snr_db(c, n)) - 3.0) < 0.01
    assert torch.allclose(spec.apply(clip[None], 16000)[0], c + n, atol=1e-6)
    assert spec.describe()["sha256"] and spec.describe()["snr_db_used"] == pytest.approx(3.0)


# ---------------------------------------------------------------------------------------------
# NoiseSpec.validate refuses what would be silently wrong or ignored.

@pytest.fixture
def noise_file(tmp_path):
    path = tmp_path / "hum.wav"
    sf.write(path, (0.3 * np.sin(np.arange(16000) / 7)).astype(np.float32), 16000)
    return str(path)


@pytest.mark.parametrize("offset, word", [(float("nan"), "nan"), (float("inf"), "inf"), (-float("inf"), "-inf"),
                                          (-0.5, "-0.5"), ("1", "'1'"), (None, "None"), (True, "True")])
def test_bad_offsets_are_refused(noise_file, offset, word):
    with pytest.raises(ConfigError, match="offset") as err:
        NoiseSpec(noise_file, offset=offset).validate()
    assert word in str(err.value)


def test_good_offsets_pass(noise_file):
    assert NoiseSpec(noise_file, offset=0).validate().offset == 0
    assert NoiseSpec(noise_file, offset=0.5).validate().offset == 0.5
    assert NoiseSpec(noise_file, offset=np.float64(0.25)).validate().offset == 0.25


@pytest.mark.parametrize("kw, word", [({"alpha": 0.8}, "alpha=0.8"), ({"snr_db": 3.0}, "snr_db=3.0"),
                                      ({"alpha": 0.6}, "alpha=0.6"), ({"offset": 1.5}, "offset=1.5"),
                                      ({"offset": float("nan")}, "nan")])
def test_levels_with_the_clean_condition_are_refused(kw, word):
    with pytest.raises(ConfigError) as err:
        NoiseSpec("clean", **kw).validate()
    assert word in str(err.value)
    if "offset" not in kw or kw["offset"] == kw["offset"]:
        assert "clean" in str(err.value)


def test_clean_without_levels_passes():
    assert NoiseSpec().validate().is_clean and NoiseSpec("clean", offset=0).validate().label == "clean"


def test_generated_noise_falls_back_to_the_settings_cache(tmp_path, monkeypatch):
    """When the repository's noises/ cannot be written, the generated noises go to
    settings.cache_dir()/noises (AUDIOINTERP_CACHE)."""
    from audiointerp import noise as noise_mod

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder would be")
    monkeypatch.setattr(noise_mod, "REPO_NOISES", blocker / "noises")
    monkeypatch.setenv("AUDIOINTERP_CACHE", str(tmp_path / "cache"))
    path = noise_path("pink")
    assert path == tmp_path / "cache" / "noises" / GENERATED["pink"][1] and path.is_file()
    assert noise_path("pink") == path  # found there next time, not rewritten
    assert noise_mod.generated_noise_dirs()[1] == tmp_path / "cache" / "noises"


def test_mixture_partners_are_seeded_and_of_another_class():
    from audiointerp.noise import mixture_partners

    labels = np.repeat(np.arange(5), 8)
    p = mixture_partners(labels, seed=3)
    assert p.shape == (40,) and (labels[p] != labels).all() and (p != np.arange(40)).all()
    assert (p == mixture_partners(labels, seed=3)).all() and not (p == mixture_partners(labels, seed=4)).all()
    assert len(set(p.tolist())) > 20  # drawn, not a fixed rotation
    with pytest.raises(ConfigError, match="at least two classes"):
        mixture_partners(np.zeros(4, dtype=int))


def test_mixture_condition_mixes_at_12_db():
    from audiointerp.noise import MIXTURE_ALPHA, NoiseSpec, snr_from_alpha

    g = torch.Generator().manual_seed(0)
    s1, s2 = torch.randn(3, 8000, generator=g), torch.randn(3, 8000, generator=g) * 5
    spec = NoiseSpec("mixture").validate()
    assert spec.alpha_used == MIXTURE_ALPHA and spec.label == "mixture"
    assert spec.describe()["snr_db_used"] == pytest.approx(12.0412, abs=1e-3) == snr_from_alpha(0.8)
    out, a, b = mix(s1, s2, alpha=spec.alpha_used, return_parts=True)
    torch.testing.assert_close(spec.apply(s1, 16000, partners=s2), out)
    assert snr_db(a, b).tolist() == pytest.approx([12.0412] * 3, abs=0.01)
    with pytest.raises(ConfigError, match="partner"):
        spec.apply(s1, 16000)
    with pytest.raises(ConfigError, match="offset"):
        NoiseSpec("mixture", offset=1.0).validate()
    with pytest.raises(ConfigError, match="partners are for the mixture"):
        NoiseSpec("clean").apply(s1, 16000, partners=s2)
    assert NoiseSpec("mixture", snr_db=0.0).label == "mixture_snr0dB"
    assert NoiseSpec("mixture", seed=2).label == "mixture_seed2"
