"""Export mawqif's model directory to ONNX (f32) for the ONNX Runtime peer."""

import sys
from pathlib import Path

import torch
sys.path.insert(0, str(Path(__file__).parent))
from peers import load_bert  # noqa: E402

model_dir, out = Path(sys.argv[1]), sys.argv[2]
model = load_bert(model_dir)
ids = torch.ones(2, 16, dtype=torch.long)
mask = torch.ones(2, 16, dtype=torch.long)
torch.onnx.export(
    model,
    (ids, mask),
    out,
    input_names=["input_ids", "attention_mask"],
    output_names=["last_hidden_state"],
    dynamic_axes={
        "input_ids": {0: "batch", 1: "seq"},
        "attention_mask": {0: "batch", 1: "seq"},
        "last_hidden_state": {0: "batch", 1: "seq"},
    },
    opset_version=17,
)
print(f"wrote {out}")
