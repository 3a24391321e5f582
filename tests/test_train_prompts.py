"""kohya sample prompts: per-prompt options in [sample] prompts and in kohya's .txt / .toml / .json prompt files,
and previews conditioned the way the LoRA was trained (clip_skip)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from train.config import ConfigError, load_config
from train.prompts import Prompt, PromptError, parse_prompt_line, read_prompt_file

BASE = ["model.path=/m.safetensors", "dataset.path=/d"]


def test_prompt_lines_take_kohyas_options() -> None:
    p = parse_prompt_line("1girl, smile --n lowres, bad hands --w 512 --h 768 --d 9 --s 28 --l 5.5 --ss dpmsolver++")
    assert p == Prompt("1girl, smile", negative="lowres, bad hands", width=512, height=768, seed=9, steps=28,
                       cfg_scale=5.5, sampler="dpmsolver++")
    assert parse_prompt_line("plain").seed is None
    assert parse_prompt_line("x --s 5000").steps == 1000  # kohya clamps steps to 1..1000
    for line, needle in (("x --w 500", "--w 500 is not a multiple of 8"), ("x --d seven", "--d 'seven' is not a number"),
                         ("x --ss plms", "--ss 'plms' is not a sampler"), ("x --cn ctrl.png", "--cn is not an option"),
                         ("--w 512", "no prompt")):
        with pytest.raises(PromptError, match=needle):
            parse_prompt_line(line)


def test_kohyas_three_prompt_file_forms(tmp_path: Path) -> None:
    txt = tmp_path / "p.txt"
    txt.write_text("# a comment\na cat --w 640 --h 512\n\nplain dog\n", encoding="utf-8")
    assert [(p.text, p.width) for p in read_prompt_file(txt)] == [("a cat", 640), ("plain dog", None)]
    toml = tmp_path / "p.toml"
    toml.write_text('[prompt]\nnegative_prompt = "lowres"\nwidth = 512\nheight = 512\nscale = 7.0\nsample_steps = 20\n'
                    '[[prompt.subset]]\nprompt = "a cat"\nseed = 3\n[[prompt.subset]]\nprompt = "a dog"\nwidth = 768\n',
                    encoding="utf-8")
    cat, dog = read_prompt_file(toml)
    assert (cat.text, cat.negative, cat.width, cat.seed, cat.steps, cat.cfg_scale) == ("a cat", "lowres", 512, 3, 20, 7.0)
    assert (dog.text, dog.width, dog.seed) == ("a dog", 768, None)
    js = tmp_path / "p.json"
    js.write_text(json.dumps(["a fox --d 4", {"prompt": "an owl", "sample_sampler": "euler"}]), encoding="utf-8")
    fox, owl = read_prompt_file(js)
    assert (fox.text, fox.seed, owl.text, owl.sampler) == ("a fox", 4, "an owl", "euler")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"prompt": "x", "guidance": 3}]), encoding="utf-8")
    with pytest.raises(PromptError, match="'guidance' is not a prompt key"):
        read_prompt_file(bad)


def test_sample_section_takes_kohyas_names_and_checks_inline_prompts(tmp_path: Path) -> None:
    (tmp_path / "prompts.txt").write_text("a cat\n", encoding="utf-8")
    (tmp_path / "cfg.toml").write_text('[sample]\nprompt_file = "prompts.txt"\nsample_at_first = true\n'
                                       'sampler = "k_dpm_2_a"\n', encoding="utf-8")
    cfg = load_config(tmp_path / "cfg.toml", overrides=BASE)
    assert cfg.sample.prompt_file == tmp_path / "prompts.txt" and cfg.sample.at_first
    assert cfg.sample.sampler == "k_dpm_2_a"
    with pytest.raises(ConfigError, match=r"sample.prompts: .*--w 100 is not a multiple of 8"):
        load_config(overrides=[*BASE, 'sample.prompts=["a cat --w 100"]'])


@pytest.mark.slow
def test_samples_are_conditioned_with_the_trainings_clip_skip(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    import numpy as np
    import torch

    from tests.test_train_loop import tiny_models
    from train.config import SampleSection
    from train.models.config import ModelConfig
    from train.models.loading import load_base_model
    from train.sample import render_samples

    folder = tiny_models(Path(request.config.cache.mkdir("kiln-tiny-models")), ("sd1",))["sd1"]
    base = load_base_model(ModelConfig(path=folder / "diffusers"))
    cfg = SampleSection(steps=2, sampler="euler", seed=7)
    prompt = [Prompt("a red square")]

    def render(clip_skip: int, stem: str) -> np.ndarray:
        (path,) = render_samples(base, cfg, prompt, resolution=(64, 64), out_dir=tmp_path, stem=stem,
                                 device=torch.device("cpu"), dtype=torch.float32, clip_skip=clip_skip)
        from PIL import Image

        return np.asarray(Image.open(path)).astype(np.int16)

    skipped, plain = render(2, "skip"), render(1, "plain")
    assert np.abs(skipped - plain).max() > 0  # clip_skip changes the conditioning
    # the preview's conditioning is the training's: penultimate layer + final norm for clip_skip 2
    from train.data.tokens import encode_sd, tokenize
    from train.sample import build_pipeline, encode_prompts

    ids = tokenize(base.tokenizers[0], ["a red square"], 75)
    trained = encode_sd(base.text_encoders[0], ids, 75, clip_skip=2)
    hidden, _ = encode_prompts(base, ["a red square"], max_token_length=75, clip_skip=2, device=torch.device("cpu"))
    assert torch.allclose(trained, hidden)
    te = base.text_encoders[0]
    out = te(ids[:, 0], output_hidden_states=True)
    norm = getattr(te, "text_model", te).final_layer_norm
    assert torch.allclose(hidden, norm(out.hidden_states[-2]), atol=1e-6)
    # without clip_skip, a preview is what the diffusers pipeline renders from the prompt itself
    pipe = build_pipeline(base, "euler")
    reference = pipe(prompt="a red square", negative_prompt="", width=64, height=64, num_inference_steps=2,
                     guidance_scale=7.0, generator=torch.Generator().manual_seed(7)).images[0]
    assert np.abs(plain - np.asarray(reference).astype(np.int16)).max() <= 1
