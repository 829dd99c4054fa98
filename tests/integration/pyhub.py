"""Python's huggingface_hub side of tests/integration/python_hub.rs.

Usage: python pyhub.py COMMAND JSON_ARGS. Prints one JSON object on stdout.
The endpoint, cache and offline mode come from the environment (HF_ENDPOINT,
HF_HUB_OFFLINE) or from the arguments, as a user would give them.
"""

import hashlib
import json
import sys


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    command, args = sys.argv[1], json.loads(sys.argv[2])
    import huggingface_hub as hh

    if command == "version":
        out = {"version": hh.__version__}
    elif command == "snapshot":
        path = hh.snapshot_download(
            args["repo"], revision=args.get("revision"), cache_dir=args["cache"]
        )
        out = {"path": path}
    elif command == "download-file":
        path = hh.hf_hub_download(
            args["repo"], args["file"], revision=args.get("revision"), cache_dir=args["cache"]
        )
        out = {"path": path, "sha256": sha256(path)}
    elif command == "read-offline":
        files = {}
        for name in args["files"]:
            path = hh.hf_hub_download(
                args["repo"],
                name,
                revision=args.get("revision"),
                cache_dir=args["cache"],
                local_files_only=True,
            )
            files[name] = {"path": path, "sha256": sha256(path)}
        out = {"files": files}
    elif command == "scan":
        info = hh.scan_cache_dir(args["cache"])
        out = {
            "warnings": [str(w) for w in info.warnings],
            "repos": [
                {
                    "repo_id": repo.repo_id,
                    "revisions": sorted(
                        (
                            {
                                "commit": rev.commit_hash,
                                "refs": sorted(rev.refs),
                                "files": sorted(f.file_name for f in rev.files),
                            }
                            for rev in repo.revisions
                        ),
                        key=lambda r: r["commit"],
                    ),
                }
                for repo in info.repos
            ],
        }
    else:
        raise SystemExit(f"unknown command {command}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
