"""The pre-flight (train/preflight/): each check fails with its message, the same config launched for real
fails the same way before the model loads, and (the promise) when `--check` says OK the real run passes its
first optimizer step on the tiny models — also after applying the `--set` fix a finding prints."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from train.config import ConfigError, load_config
from train.preflight import DeviceFacts, run_preflight
from train.rundir import read_events

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_fixtures import kohya_lora_keys, write_safetensors_keys  # noqa: E402
from test_train_loop import make_dataset, one_thread, tiny_models  # noqa: E402, F401 (fixture)


@pytest.fixture(scope="module")
def models(request: pytest.FixtureRequest) -> dict[str, Path]:
    return tiny_models(Path(request.config.cache.mkdir("kiln-tiny-models")), archs=("sd1",))


@pytest.fixture(scope="module")
def world(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> World:
    """The files the broken configs point at: the tiny model, a dataset, a truncated copy, a LoRA, a file."""
    root = tmp_path_factory.mktemp("preflight")
    dataset = make_dataset(root, broken=False)
    single = models["sd1"] / "tiny-sd1.safetensors"
    truncated = root / "truncated.safetensors"
    truncated.write_bytes(single.read_bytes()[: single.stat().st_size // 2])
    lora = write_safetensors_keys(root / "a-lora.safetensors", kohya_lora_keys())
    broken_only = root / "broken-ds" / "1_x"
    broken_only.mkdir(parents=True)
    (broken_only / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    a_file = root / "a-file.txt"
    a_file.write_text("not a folder")
    return World(root=root, model=models["sd1"] / "diffusers", single=single, config_dir=models["sd1"] / "config",
                 dataset=dataset, truncated=truncated, lora=lora, broken_dataset=root / "broken-ds", a_file=a_file)


@dataclass
class World:
    root: Path
    model: Path
    single: Path
    config_dir: Path
    dataset: Path
    truncated: Path
    lora: Path
    broken_dataset: Path
    a_file: Path


def base_sets(w: World, out: Path, name: str) -> list[str]:
    return [f"model.path={w.model}", f"dataset.path={w.dataset}", "dataset.resolution=64",
            "dataset.min_bucket_reso=64", "dataset.max_bucket_reso=128", f"output.dir={out}", f"output.name={name}",
            "network.dim=4", "train.mixed_precision=no", "train.max_steps=1", "output.save_precision=float",
            "sample.enabled=false", "train.learning_rate=1e-3"]


# (id, preset, extra --set values (after the base ones; {placeholders} from World), what the message says)
BROKEN: list[tuple[str, str | None, list[str], str]] = [
    ("issue-17: easy preset, optimizer replaced", "easy",
     ["train.optimizer=AdamW", "train.unet_lr=0.001", "train.mixed_precision=no"], ""),
    ("unknown optimizer argument", None, ["train.optimizer_args={ decouple = true }"],
     "train.optimizer_args.decouple: AdamW (torch.optim.AdamW) has no argument 'decouple'; it accepts: betas, eps"),
    ("misspelt optimizer argument", None,
     ["train.optimizer=Prodigy", "train.learning_rate=1.0", "train.optimizer_args={ decuple = true }"],
     "train.optimizer_args.decuple: Prodigy (prodigyopt.Prodigy) has no argument 'decuple'; did you mean 'decouple'?"),
    ("optimizer refuses a value", None,
     ["train.optimizer=Prodigy", "train.learning_rate=1.0", "train.optimizer_args={ betas = [1.5, 0.9] }"],
     "train.optimizer_args: Prodigy refuses these arguments ({ betas = [1.5, 0.9] }): ValueError"),
    ("AdamW at lr 1.0", None, ["train.learning_rate=1.0"],
     "train.learning_rate: 1 is a step size 10000x the usual 0.0001 for AdamW"),
    ("Prodigy at lr 1e-4", None, ["train.optimizer=Prodigy", "train.learning_rate=1e-4"],
     "train.learning_rate: 0.0001 is far from 1.0: Prodigy chooses the step size itself"),
    ("DAdaptAdam with unet_lr 1e-4", None,
     ["train.optimizer=DAdaptAdam", "train.learning_rate=1.0", "train.unet_lr=1e-4"],
     "train.unet_lr: 0.0001 is far from 1.0: DAdaptAdam"),
    ("AdamW text encoder at 0.5", None, ["train.text_encoder_lr=0.5"],
     "train.text_encoder_lr: 0.5 is a step size 10000x the usual 5e-05 for AdamW"),
    ("Lion at 0.02", None, ["train.optimizer=Lion", "train.learning_rate=0.02"],
     "train.learning_rate: 0.02 is a step size 667x the usual 3e-05 for Lion"),
    ("Adafactor at 0.05", None, ["train.optimizer=Adafactor", "train.learning_rate=0.05"],
     "train.learning_rate: 0.05 is a step size 500x the usual 0.0001 for Adafactor"),
    ("fp16 on the CPU", None, ["train.mixed_precision=fp16"],
     "train.mixed_precision: 'fp16' needs a CUDA GPU and this machine has none"),
    ("bf16 on the CPU", None, ["train.mixed_precision=bf16"],
     "train.mixed_precision: 'bf16' needs a CUDA GPU and this machine has none"),
    ("xformers not installed", None, ["train.attention=xformers"], "train.attention: 'xformers' is not installed"),
    ("8-bit optimizer without CUDA", None, ["train.optimizer=AdamW8bit"],
     "train.optimizer: 'AdamW8bit' runs on CUDA GPUs only (bitsandbytes) and this machine has none"),
    ("optimizer package missing", None, ["train.optimizer=nosuchpkg.FastAdam"],
     "train.optimizer: 'nosuchpkg.FastAdam' needs the 'nosuchpkg' package: pip install nosuchpkg"),
    ("model file missing", None, ["model.path={root}/nope.safetensors"], "model.path: {root}/nope.safetensors does not exist"),
    ("model file truncated", None, ["model.path={truncated}", "model.config_dir={config_dir}"],
     "model.path: {truncated} is not a valid .safetensors file (truncated or corrupted download?)"),
    ("a LoRA as the base model", None, ["model.path={lora}"], "this is a LoRA/LyCORIS file, not a base model"),
    ("SDXL preset on an SD1 model", "sdxl-lowmem",
     ["train.mixed_precision=no", "dataset.resolution=64", "model.path={single}", "model.config_dir={config_dir}"],
     "model.architecture: model.architecture = 'sdxl' but {single} is an SD1 checkpoint"),
    ("output folder under a file", None, ["output.dir={a_file}/runs"], "output.dir: {a_file}/runs/{name} cannot be made"),
    ("disk too small for the saves", None,
     ["network.dim=4096", "train.max_steps=100000", "output.save_every_n_steps=1"], "the run needs about"),
    ("batch larger than every bucket", None, ["train.batch_size=8"],
     "train.batch_size: train.batch_size = 8 is larger than every bucket: the largest, 64x64, holds 6 samples"),
    ("no trainable images", None, ["dataset.path={broken_dataset}"], "has no usable training images"),
    ("dataset folder missing", None, ["dataset.path={root}/no-such-dataset"], "does not exist"),
    ("misspelt key", None, ["train.lerning_rate=1e-4"], "train.lerning_rate: unknown key; did you mean 'learning_rate'?"),
    ("kohya key in the wrong section", None, ["train.network_dim=8"], "train.network_dim: unknown key; did you mean 'network.dim'?"),
    ("key in the wrong section", None, ["train.dim=8"], "train.dim: unknown key; did you mean 'network.dim'?"),
    ("wrong value type", None, ["train.batch_size=two"], "train.batch_size: 'two' is not allowed: input should be a valid integer"),
]
IDS = [case[0] for case in BROKEN]


def fill(text: str, w: World, name: str = "") -> str:
    """``{root}``, ``{single}``... (World's fields) and ``{name}`` replaced; other braces (TOML) kept."""
    fields = {**{k: str(v) for k, v in vars(w).items()}, "name": name}
    return re.sub(r"\{(\w+)\}", lambda m: fields.get(m.group(1), m.group(0)), text)


def argv_for(w: World, out: Path, name: str, preset: str | None, extra: list[str]) -> list[str]:
    sets = base_sets(w, out, name) + [fill(e, w, name) for e in extra]
    argv = ["--preset", preset] if preset else []
    for item in sets:
        argv += ["--set", item]
    return [*argv, "--quiet"]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from train.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def fixes(stderr: str) -> list[str] | None:
    """The `--set` values the error findings' fix lines give (the first `--set` of each line: the fix, not the
    override), or None when some error has no such fix (a placeholder like <a folder> is none)."""
    found = []
    for line in stderr.splitlines():
        if line.startswith("kiln train:") and "fix: " in line:
            match = re.search(r"--set '([^']+)'|--set (\S+)", line.split("fix: ", 1)[1])
            if match is None or "<" in (value := match.group(1) or match.group(2)):
                return None
            found.append(value)
    counted = re.search(r"found (\d+) problem", stderr)
    return found if counted and int(counted.group(1)) == len(found) else None


# ---------------------------------------------------------------------------------------------------- each check


@pytest.mark.parametrize(("case", "preset", "extra", "message"), [c for c in BROKEN if c[3]], ids=[c[0] for c in BROKEN if c[3]])
def test_check_and_real_launch_fail_the_same_way_before_the_model_loads(world, tmp_path, capsys, case, preset,
                                                                        extra, message) -> None:
    name = "broken"
    argv = argv_for(world, tmp_path, name, preset, extra)
    expected = fill(message, world, name)
    code, out, err = run_cli([*argv, "--check"], capsys)
    assert code == 1 and expected in err, err
    assert "config OK" not in out
    code, out, err = run_cli(argv, capsys)
    assert code == 1 and expected in err, err
    assert "loading model" not in out  # it failed before the model loads
    run = tmp_path / name
    if run.exists():  # a dataset-stage finding: the run started, scanned, and stopped there
        phases = [e.get("phase") for e in read_events(run) if e["type"] == "phase"]
        assert "loading model" not in phases and any(expected in str(e.get("message")) for e in read_events(run))


@pytest.mark.slow  # one optimizer step per case on the tiny model
@pytest.mark.parametrize(("case", "preset", "extra", "message"), BROKEN, ids=IDS)
def test_when_check_says_ok_the_first_optimizer_step_passes(world, tmp_path, capsys, case, preset, extra,
                                                            message) -> None:
    """The promise: `--check` OK means the run gets through its first optimizer step. A broken config's
    printed `--set` fixes, applied, must give such a config too (when every finding printed one)."""
    argv = argv_for(world, tmp_path, "promise", preset, extra)
    code, out, err = run_cli([*argv, "--check"], capsys)
    if code != 0:
        sets = fixes(err)
        if not sets:
            pytest.skip(f"not every problem has a --set fix: {err.splitlines()[:2]}")
        fixed = [*argv[:-1], *[a for s in sets for a in ("--set", s)], "--quiet"]
        code, out, err = run_cli([*fixed, "--check"], capsys)
        assert code == 0, f"the printed fixes {sets} did not make --check pass:\n{err}"
        argv = fixed
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    steps = [e for e in read_events(tmp_path / "promise") if e["type"] == "step"]
    assert steps and steps[0]["step"] == 1, out + err


# ---------------------------------------------------------------------------------------------------- unit checks


def cfg_for(w: World, tmp_path: Path, *extra: str, preset: str | None = None) -> object:
    return load_config(preset=preset, overrides=base_sets(w, tmp_path, "unit") + [fill(e, w) for e in extra])


def messages(report: object) -> list[str]:
    return ["\n".join(f.lines()) for f in report]  # type: ignore[attr-defined]


def test_preset_optimizer_replaced_drops_its_arguments_and_learning_rates_and_says_so(world, tmp_path) -> None:
    notes: list[str] = []
    cfg = load_config(preset="easy", notes=notes, overrides=[
        f"model.path={world.model}", f"dataset.path={world.dataset}", "train.optimizer=AdamW", "train.unet_lr=0.001"])
    assert cfg.train.optimizer_args == {} and cfg.train.learning_rate == 1e-4
    assert cfg.train.unet_lr == 0.001 and cfg.train.text_encoder_lr is None  # the user's value stays
    (note,) = notes
    assert note.startswith("preset 'easy' is tuned for Prodigy but train.optimizer = 'AdamW': dropped the preset's "
                           "optimizer_args = { decouple = true, weight_decay = 0.01, betas = [0.9, 0.999]")
    assert "learning_rate = 1.0, text_encoder_lr = 1.0; learning_rate = 0.0001 (AdamW's usual)" in note
    # an argument the user sets stays (and only it); a 0 learning rate (= not trained) is no optimizer's value
    notes.clear()
    cfg = load_config(preset="sdxl-lowmem", notes=notes, overrides=[
        f"model.path={world.model}", f"dataset.path={world.dataset}", "train.optimizer=Lion",
        "train.optimizer_args.weight_decay=0.1"])
    assert cfg.train.optimizer_args == {"weight_decay": 0.1} and cfg.train.text_encoder_lr == 0.0
    assert cfg.train.learning_rate == 3e-5 and "unet_lr = 0.0001" in notes[0] and "weight_decay" not in notes[0]
    # the same optimizer (any case): nothing dropped
    notes.clear()
    cfg = load_config(preset="easy", notes=notes, overrides=[
        f"model.path={world.model}", f"dataset.path={world.dataset}", "train.optimizer=prodigy"])
    assert not notes and cfg.train.optimizer_args["decouple"] is True


@pytest.mark.parametrize(("optimizer", "lr", "ok"), [
    ("AdamW", 1e-4, True), ("AdamW", 0.009, True), ("AdamW", 0.01, False), ("Lion", 3e-5, True),
    ("SGD", 0.05, False), ("Prodigy", 1.0, True), ("Prodigy", 0.5, True), ("Prodigy", 0.05, False),
    ("Prodigy", 20.0, False), ("DAdaptAdam", 1.0, True), ("DAdaptLion", 1e-4, False),
    ("torch.optim.Adam", 1.0, False), ("torch.optim.Adam", 1e-4, True), ("prodigyopt.Prodigy", 1e-3, False),
])
def test_learning_rate_sanity_per_family(world, tmp_path, optimizer, lr, ok) -> None:
    cfg = cfg_for(world, tmp_path, f"train.optimizer={optimizer}", f"train.learning_rate={lr}")
    found = [f for f in run_preflight(cfg) if f.check == "learning rates"]
    assert (not found) == ok, messages(found)
    if not ok:
        assert found[0].fix.startswith("--set train.learning_rate=") and "allow_unusual_lr" in found[0].fix
    cfg = cfg_for(world, tmp_path, f"train.optimizer={optimizer}", f"train.learning_rate={lr}",
                  "train.allow_unusual_lr=true")
    assert all(f.severity == "warning" for f in run_preflight(cfg) if f.check == "learning rates")


def test_learning_rates_checked_are_the_ones_in_effect(world, tmp_path) -> None:
    # learning_rate is unused when both parts have their own: AdamW at unet/te 1e-4 is fine with lr 1.0
    cfg = cfg_for(world, tmp_path, "train.learning_rate=1.0", "train.unet_lr=1e-4", "train.text_encoder_lr=5e-5")
    assert not [f for f in run_preflight(cfg) if f.check == "learning rates"]
    # a frozen text encoder's rate is not looked at
    cfg = cfg_for(world, tmp_path, "train.unet_lr=1e-4", "train.text_encoder_lr=0.5", "network.train_text_encoder=false")
    assert not [f for f in run_preflight(cfg) if f.check == "learning rates"]


def test_bf16_needs_an_ampere_gpu(world, tmp_path) -> None:
    cfg = cfg_for(world, tmp_path, "train.mixed_precision=bf16")
    turing = DeviceFacts(cuda=True, name="Tesla T4", capability=(7, 5), count=1)
    (finding,) = [f for f in run_preflight(cfg, device=turing) if f.check == "mixed precision"]
    assert "Tesla T4 is 7.5" in finding.problem and finding.fix.startswith("--set train.mixed_precision=fp16")
    ampere = DeviceFacts(cuda=True, name="A100", capability=(8, 0), count=1)
    assert not [f for f in run_preflight(cfg, device=ampere) if f.check == "mixed precision"]
    cfg = cfg_for(world, tmp_path)
    (finding,) = [f for f in run_preflight(cfg, device=ampere, num_processes=2) if f.check == "processes"]
    assert "2 processes but this machine has 1 GPU" in finding.problem


def test_unreadable_model_file(world, tmp_path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    copy = tmp_path / "locked.safetensors"
    copy.write_bytes(world.single.read_bytes())
    copy.chmod(0)
    cfg = cfg_for(world, tmp_path, f"model.path={copy}", "model.config_dir={config_dir}")
    assert any("cannot be read: Permission denied" in m for m in messages(run_preflight(cfg)))


def test_vae_and_init_from_files(world, tmp_path) -> None:
    cfg = cfg_for(world, tmp_path, "model.vae={truncated}", f"network.init_from={tmp_path}/none.safetensors")
    found = messages(run_preflight(cfg))
    assert any(m.startswith("model.vae: ") and "truncated" in m for m in found), found
    assert any(m.startswith(f"network.init_from: {tmp_path}/none.safetensors does not exist") for m in found)


def test_short_buckets_are_a_warning_that_says_what_kohya_does(tmp_path, world) -> None:
    from train.data.dataset import build_items

    # at 128 px, coffee (96x64) gets its own bucket (160x96): 1 image x 2 repeats; the others share 128x128 (4)
    cfg = cfg_for(world, tmp_path, "train.batch_size=4", "dataset.resolution=128", "dataset.max_bucket_reso=256",
                  "dataset.bucket_reso_steps=32")
    data = build_items(cfg.dataset, lambda m, p: None, progress=False, batch_size=cfg.train.batch_size)
    report = run_preflight(cfg, stages=("dataset",), data=data)
    (finding,) = [f for f in report if f.check == "batch size and buckets"]
    assert finding.severity == "warning" and "kohya and kiln do the same" in finding.problem
    assert "1 of 2 buckets hold fewer samples than the batch of 4 (160x96:2)" in finding.problem


def test_disk_estimate_counts_kept_saves_state_and_latents(world, tmp_path) -> None:
    from train.data.dataset import build_items
    from train.preflight.core import Context
    from train.preflight.storage import PARAMS_PER_RANK, estimate_disk

    cfg = cfg_for(world, tmp_path, "network.dim=32", "train.max_steps=1000", "output.save_every_n_steps=100",
                  "output.save_last_n=3", "output.save_precision=fp16", "dataset.cache_latents_to_disk=true",
                  "dataset.flip_aug=true")
    data = build_items(cfg.dataset, lambda m, p: None, progress=False)
    need = estimate_disk(Context(cfg=cfg, data=data))
    assert need is not None
    params = 32 * (PARAMS_PER_RANK["sd1"]["unet"] + PARAMS_PER_RANK["sd1"]["te"])
    lora = params * 2
    latents = 3 * 2 * (4 * 8 * 8 * 4 + 4096)  # 3 images, flipped too, 64x64 -> 4x8x8 fp32
    assert need.parts[0] == f"4 LoRA saves x {lora / 2**20:.1f} MB = {4 * lora / 2**20:.1f} MB"  # 3 kept + final
    assert sum(need.by_folder.values()) == 4 * lora + params * 12 + latents


@pytest.mark.slow  # builds the full-size models on the meta device
def test_params_per_rank_table_matches_the_real_architectures() -> None:
    from train.models.meta import meta_text_encoders, meta_unet
    from train.network.targets import find_targets
    from train.preflight.storage import PARAMS_PER_RANK

    for arch, table in PARAMS_PER_RANK.items():
        unet, encoders = meta_unet(arch), meta_text_encoders(arch)
        attention = {t.path for t in find_targets(arch, unet, encoders, include_conv=False)}
        counted: dict[str, int] = {}
        for t in find_targets(arch, unet, encoders, include_conv=True):
            m = t.module
            n = m.in_features + m.out_features if t.kind == "linear" else \
                m.in_channels * m.kernel_size[0] * m.kernel_size[1] + m.out_channels
            part = t.part if t.part != "unet" else "unet" if t.path in attention else \
                "unet_conv3x3" if t.kind == "conv" else "unet_conv1x1"
            counted[part] = counted.get(part, 0) + n
        assert counted == table, arch


def test_config_errors_suggest_the_right_key(tmp_path) -> None:
    base = ["model.path=/m.safetensors", "dataset.path=/d"]
    for sets, expected in [
        (["train.max_train_epochs=10"], "train.max_train_epochs: unknown key; did you mean 'max_epochs'?"),
        (["network.network_dropout=0.1"], "network.network_dropout: unknown key; did you mean 'dropout'?"),
        (["train.output_name=x"], "train.output_name: unknown key; did you mean 'output.name'?"),
        (["model.path=5"], "model.path: 5 is not allowed: must be a path (a quoted string)"),
    ]:
        with pytest.raises(ConfigError) as info:
            load_config(overrides=base + sets)
        assert any(line.startswith(expected) for line in info.value.lines), info.value.lines
    kohya_toml = tmp_path / "dataset.toml"
    kohya_toml.write_text('[general]\nshuffle_caption = true\n[[datasets]]\nresolution = 512\n')
    with pytest.raises(ConfigError) as info:
        load_config(kohya_toml, overrides=base)
    assert any("looks like a kohya dataset TOML" in line and "dataset.path" in line for line in info.value.lines)


def test_every_check_is_listed_in_the_training_docs() -> None:
    from train.preflight import CHECKS, load_checks

    load_checks()
    docs = (ROOT / "docs" / "TRAINING.md").read_text(encoding="utf-8")
    missing = [c.name for c in CHECKS if f"**{c.name}**" not in docs]
    assert not missing, f"docs/TRAINING.md does not list: {missing}"


def test_help_stays_light() -> None:
    """Importing the pre-flight's registry (what `kiln --help` reaches through train.config) imports no torch."""
    import subprocess

    code = ("import sys, train.config, train.preflight, train.optim; "
            "print(any(m in sys.modules for m in ('torch', 'diffusers', 'transformers')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_fix_lines_parse() -> None:
    text = "kiln train: the pre-flight check found 2 problems:\n" \
           "kiln train:     fix: --set 'train.optimizer_args={ betas = [0.9, 0.99] }'\n" \
           "kiln train:     fix: --set train.learning_rate=0.0001 (or --set train.allow_unusual_lr=true ...)\n" \
           "warning: dataset.resolution: ...\n         fix: --set dataset.resolution=1024\n"
    assert fixes(text) == ["train.optimizer_args={ betas = [0.9, 0.99] }", "train.learning_rate=0.0001"]
    assert fixes(text.replace("2 problems", "3 problems")) is None
    assert fixes("kiln train: the pre-flight check found 1 problem:\nkiln train:   fix: --set output.dir=<a folder>") is None
