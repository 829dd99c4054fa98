"""Write a tiny ARBERT-style BERT checkpoint with PyTorch, plus what
transformers computes from it, as a fixture for tests/integration/pth_checkpoint.rs.

ARBERT ships only `pytorch_model.bin` (a BertForMaskedLM state dict, keys
prefixed `bert.`, plus `cls.` tensors) and a `vocab.txt`. This writes the
same kind of checkpoint at a tiny size, with `torch.save`'s zip format.
"""

import json
import sys
from pathlib import Path

import torch
from transformers import BertConfig, BertForMaskedLM, BertModel, BertTokenizer

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)

# Words chosen so that every hamza form and shadda must survive WordPiece.
words = """أعلن إعلان آخر مؤتمر مسؤول سئل رئيس هيئة شؤون قال إن أن
الحكومة الليبية المجلس طرابلس بنغازي في من على عن مع محمّد الشّعب
شدّد أكّد ##ة ##ات ##ون ##ها ##هم ال ##ي . ، : « » " 2026 ##0 1""".split()
vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
(out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
(out / "tokenizer_config.json").write_text(
    json.dumps({"do_lower_case": False, "model_max_length": 64}) + "\n"
)

torch.manual_seed(20261129)
config = BertConfig(
    vocab_size=len(vocab),
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
    type_vocab_size=2,
    pad_token_id=0,
)
mlm = BertForMaskedLM(config)
# Random init leaves LayerNorm at 1/0; perturb it so a loader that skipped
# those tensors would be caught.
with torch.no_grad():
    for name, p in mlm.named_parameters():
        if "LayerNorm" in name:
            p.add_(0.1 * torch.randn_like(p))
mlm.eval()
# save_pretrained would write safetensors by default; ARBERT's file is a
# torch.save pickle, so write it the same way.
torch.save(mlm.state_dict(), out / "pytorch_model.bin")
config.to_json_file(out / "config.json")

tokenizer = BertTokenizer(str(out / "vocab.txt"), do_lower_case=False)
encoder = BertModel.from_pretrained(out, add_pooling_layer=False, attn_implementation="eager")
encoder.eval()

sentences = [
    "أعلن مسؤول في الحكومة الليبية إن المؤتمر آخر",
    "قال رئيس هيئة شؤون «الشّعب»: أكّد محمّد",
    "سئل المجلس في طرابلس عن إعلان 2026",
]
cases = []
for s in sentences:
    enc = tokenizer(s, return_tensors="pt")
    with torch.no_grad():
        hidden = encoder(**enc).last_hidden_state[0]
    mask = enc["attention_mask"][0].unsqueeze(-1).float()
    mean = (hidden * mask).sum(0) / mask.sum()
    cases.append(
        {
            "text": s,
            "ids": enc["input_ids"][0].tolist(),
            "tokens": tokenizer.convert_ids_to_tokens(enc["input_ids"][0]),
            "mean": [round(x, 7) for x in mean.tolist()],
            "cls": [round(x, 7) for x in hidden[0].tolist()],
        }
    )
meta = {
    "generator": "scripts/gen-pth-fixture.sh",
    "torch": torch.__version__,
    "transformers": __import__("transformers").__version__,
    "cases": cases,
}
(out / "expected.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
print(f"wrote {out}: {len(vocab)} tokens, {sum(p.numel() for p in mlm.parameters())} parameters")
