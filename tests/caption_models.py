"""Tiny, randomly initialised captioning models saved in the layout ``kiln caption`` loads (no download).

* ``make_blip(folder)``: BlipForConditionalGeneration with a 23-word BERT vocabulary;
* ``make_llava(folder)``: LlavaForConditionalGeneration (CLIP vision tower, Llama text model) with a chat
  template, a byte-level BPE tokenizer trained on a few sentences and an ``<image>`` token;
* ``make_florence(folder)``: Florence2ForConditionalGeneration (DaViT vision tower, BART text model).

Weights are random (seeded), so the captions are word salad from the vocabulary: the tests check the plumbing
(files, modes, journal, prompts, batching), not the prose.
"""

from __future__ import annotations

from pathlib import Path

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "photo", "of", "the", "cat", "dog", "woman",
         "red", "dress", "sitting", "on", "chair", "in", "room", "with", "blue", "sky"]  # fmt: skip
SENTENCES = ["a photo of a cat sitting on a red chair", "a woman in a blue dress, smiling",
             "describe this image in one or two plain sentences as a caption", "USER: ASSISTANT:",
             "describe with a paragraph what is shown in the image"] * 20  # fmt: skip


def make_blip(folder: Path) -> Path:
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor
    from transformers.models.blip.image_processing_blip import BlipImageProcessor

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), bos_token="[DEC]", model_max_length=64)
    config = BlipConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        text_config={"vocab_size": len(WORDS), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 64, "bos_token_id": tokenizer.bos_token_id,
                     "pad_token_id": 0, "sep_token_id": 3, "eos_token_id": 3},
        projection_dim=32,
    )  # fmt: skip
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).eval().save_pretrained(folder)
    BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer).save_pretrained(folder)
    return folder


def _bpe(special: list[str], vocab_size: int = 300):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(SENTENCES, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special))
    return tokenizer


CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}"
    "<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %} {% else %}ASSISTANT: {{ m['content'][0]['text'] }}</s>"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def make_llava(folder: Path) -> Path:
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )
    from transformers.models.clip.image_processing_clip import CLIPImageProcessor

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_bpe(["<unk>", "<s>", "</s>", "<pad>", "<image>"]), bos_token="<s>", eos_token="</s>",
        unk_token="<unk>", pad_token="<pad>", extra_special_tokens={"image_token": "<image>"},
    )  # fmt: skip
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=32)  # fmt: skip
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                       bos_token_id=1, eos_token_id=2, pad_token_id=3)  # fmt: skip
    config = LlavaConfig(vision_config=vision, text_config=text, vision_feature_layer=-1,
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"))  # fmt: skip
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).eval().save_pretrained(folder)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default",
                   chat_template=CHAT_TEMPLATE, num_additional_image_tokens=1).save_pretrained(folder)  # fmt: skip
    return folder


def make_florence(folder: Path) -> Path:
    import torch
    from transformers import (
        BartTokenizerFast,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )
    from transformers.models.clip.image_processing_clip import CLIPImageProcessor

    folder.mkdir(parents=True, exist_ok=True)
    _bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>", "<image>"]).save(str(folder / "tokenizer.json"))
    tokenizer = BartTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), bos_token="<s>", eos_token="</s>",
                                  pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                                  extra_special_tokens={"image_token": "<image>"})  # fmt: skip
    images = CLIPImageProcessor(size={"height": 64, "width": 64}, crop_size={"height": 64, "width": 64}, do_center_crop=False)
    images.image_seq_length = 65  # (64 / 4 / 2)^2 patches + the pooled token
    processor = Florence2Processor(image_processor=images, tokenizer=tokenizer)
    vision = {"depths": [1, 1], "patch_size": [7, 3], "patch_stride": [4, 2], "patch_padding": [3, 1],
              "embed_dim": [16, 32], "num_heads": [2, 4], "num_groups": [2, 4], "window_size": 2, "projection_dim": 32}
    text = {"vocab_size": len(processor.tokenizer), "d_model": 32, "encoder_layers": 1, "decoder_layers": 1,
            "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
            "max_position_embeddings": 512}  # fmt: skip
    config = Florence2Config(vision_config=vision, text_config=text, image_token_id=processor.tokenizer.image_token_id)
    torch.manual_seed(0)
    Florence2ForConditionalGeneration(config).eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
