#!/usr/bin/env python3
"""Writes the prompts of the capture/generate benchmarks (BENCHMARKS.md): 64 text records of
~330 words cut from the license texts Debian ships in /usr/share/common-licenses (the same on
every Debian 12 machine), and 16 chat records, as JSONL.

Usage: python3 scripts/make-bench-prompts.py OUT.jsonl
"""

import json
import os
import sys

LICENSES = "/usr/share/common-licenses"
QUESTIONS = [
    "What is the capital of France?", "Explain photosynthesis in one paragraph.",
    "Write a haiku about the sea.", "How do vaccines work?", "What is a prime number?",
    "Give me three tips for learning to cook.", "Why is the sky blue?",
    "Summarise the plot of Romeo and Juliet.", "What does a CPU do?",
    "How far is the Moon from the Earth?", "Name five mammals that live in the ocean.",
    "What is the difference between weather and climate?", "How do I boil an egg?",
    "Explain what a neural network is.", "What causes earthquakes?", "Tell me a short story about a fox.",
]


def main():
    words = []
    for name in sorted(os.listdir(LICENSES)):
        path = os.path.join(LICENSES, name)
        if os.path.isfile(path) and not os.path.islink(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                words.extend(f.read().split())
    records = []
    for i in range(64):
        chunk = words[i * 330 : (i + 1) * 330]
        records.append({"text": " ".join(chunk)})
    for q in QUESTIONS:
        records.append({"messages": [{"role": "user", "content": q}]})
    with open(sys.argv[1], "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    print(f"{len(records)} records, {len(words)} words available")


if __name__ == "__main__":
    main()
