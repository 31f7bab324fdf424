import sys, time, json, dataclasses, torch, random
sys.path.insert(0, ".")
from pathlib import Path
from nas.space import load_space
from nas.supernet.data import load_corpus
from nas.supernet.recipe import TrainConfig
from nas.supernet.step import sandwich
from nas.supernet.train import train_supernet, load_supernet
from nas.supernet.score import AccuracyScorer
name, distill, nr, steps = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4])
s = load_space("shakespeare"); corpus = load_corpus(block_size=256)
cfg = TrainConfig(steps=steps, batch_size=64, lr=1e-3, min_lr=1e-4, warmup=100, weight_decay=0.1, grad_clip=1.0,
                  dropout=0.2, n_random=nr, distill_alpha=1.0 if distill else 0.0, eval_every=0, eval_batches=4, seed=1337, device="cuda", log_every=100)
picker = sandwich
if name == "largest_only":
    picker = lambda space, rng, n: [space.largest()]  # noqa: E731
t = time.time()
ck = train_supernet(s, corpus, cfg, Path(f"/tmp/sd_{name}"), progress=False, picker=picker)
sn = load_supernet(ck, s, "cuda")
sc = AccuracyScorer(sn, corpus, "cuda", 4, 32)
print(json.dumps({"name": name, "largest": sc(s.largest()), "baseline": sc(s.baseline_arch()), "smallest": sc(s.smallest()), "s": time.time() - t}), flush=True)
