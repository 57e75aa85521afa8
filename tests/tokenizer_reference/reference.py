"""Reference ids for the tokenizer conformance tests: HuggingFace `tokenizers` (the Rust library
transformers, vLLM and TGI encode with) on a tokenizer.json.

Usage: python reference.py <tokenizer folder> <output.json> <text files...>
Text files are read as bytes and decoded as UTF-8 with each maximal invalid subpart replaced by
U+FFFD (a BOM is kept); the output is keyed by file name.
"""
import json
import os
import sys

from tokenizers import Tokenizer


def main() -> None:
    folder, output, *files = sys.argv[1:]
    tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    result = {}
    for path in files:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        with_special = tokenizer.encode(text, add_special_tokens=True).ids
        decoded = tokenizer.decode(ids, skip_special_tokens=False) if ids else ""
        result[os.path.basename(path)] = {
            "ids": ids,
            "decoded": decoded,
            "with_special_length": len(with_special),
            "with_special_head": with_special[:4],
            "with_special_tail": with_special[-4:],
        }
    with open(output, "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
