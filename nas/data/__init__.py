"""Corpora: subword tokenization and prepared corpus folders (``nas-data prepare``).

- ``documents``: the source files, their checks, and the split of each (by document).
- ``tokenizer``: byte-level BPE with Hugging Face ``tokenizers``.
- ``shards``: token ids of each split in one flat memory-mapped file.
- ``manifest``: what a corpus was made of, its identity, and whether a re-run has work.
- ``prepare``: the command's work, written whole or not at all; ``__main__`` its flags.
- ``corpus``: a prepared corpus as training and scoring read it.

``tinyshakespeare.txt`` here is the shipped character corpus (``nas.paths.CORPUS``).
Nothing here imports torch.
"""
