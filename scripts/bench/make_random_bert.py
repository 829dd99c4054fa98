"""A BERT-base-sized encoder with random weights (AraBERT's shape: 12
layers, hidden 768, 12 heads, 3072 intermediate, 64,000-entry vocabulary),
for timing what hub users run. The tokenizer is e5's with its unigram
vocabulary cut to the first 64,000 pieces, so ids fit the table."""

import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel

src, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
vocab = 64000
tok = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
tok["model"]["vocab"] = tok["model"]["vocab"][:vocab]
(out / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
config = BertConfig(vocab_size=vocab, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, max_position_embeddings=512, pad_token_id=1)
torch.manual_seed(0)
model = BertModel(config, add_pooling_layer=False).eval()
config.to_json_file(out / "config.json")
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "model.safetensors")
profile = json.loads((src / "mawqif.json").read_text())
profile["id"] = "random/bert-base-arabert-shape"
(out / "mawqif.json").write_text(json.dumps(profile))
print(f"wrote {out}")
