"""Temporary GPU check for the seq2seq files (deleted after the run)."""
import sys, time, torch
import torch.nn.functional as F
sys.path[:0] = ["src", "tests"]
import pytorch_lightning as pl
from dlrun.models.seq2seq import Seq2Seq
from dlrun.models.search import greedy_search, beam_search
from dlrun.training.losses import masked_cross_entropy
import test_seq2seq_models as T
import test_translation_module as TT

dev = "cuda"
print(torch.__version__, pl.__version__, torch.cuda.get_device_name(), flush=True)
for opts in [{"attention": "bahdanau"}, {"attention": "dot"}, {"attention": "general", "enc_layers": 2, "dec_layers": 2}, {"input_feeding": False, "tie_embeddings": True}]:
    m = T.make_model(**opts).to(dev)
    src, l, tgt = (x.to(dev) for x in T.make_batch())
    logits, a = m(src, l, tgt[:, :-1], return_attention=True)
    lw = m(F.pad(src, (0, 4)), l, F.pad(tgt, (0, 3))[:, :-1])
    real = tgt[:, 1:] != 0
    inv = (lw[:, :5][real] - logits[real]).abs().max().item()
    zero = all(bool((a[i, :, n:] == 0).all()) for i, n in enumerate(l.tolist()))
    g, _ = greedy_search(m, src, l, 9)
    b1 = beam_search(m, src, l, 1, 1.0, 9)
    b5 = beam_search(m, src, l, 5, 1.0, 9)
    gc, _ = greedy_search(m.cpu(), *T.make_batch()[:2], 9)
    print(opts, "pad-invariance maxdiff", inv, "attn-zero", zero, "beam1==greedy", torch.equal(g, b1), "gpu==cpu greedy", torch.equal(g.cpu(), gc), "beam5", tuple(b5.shape), flush=True)
m = T.make_model(teacher_forcing=0.5).train().to(dev)
m(src, l, tgt[:, :-1]).sum().backward()
print("scheduled sampling backward ok", flush=True)

for precision in ["32-true", "bf16-mixed", "16-mixed"]:
    module, data = TT.make_module(val_decode="beam"), TT.CopyData()
    data.splits["val"] = data.splits["train"][:10]
    tr = pl.Trainer(max_epochs=15, accelerator="gpu", devices=1, precision=precision, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    t = time.perf_counter(); tr.fit(module, datamodule=data)
    res = tr.test(module, datamodule=data, verbose=False)[0]
    print(precision, "fit+test s", round(time.perf_counter() - t, 1), {k: round(float(v), 4) for k, v in tr.callback_metrics.items()}, "samples", len(module.samples), module.bleu_signature, flush=True)

torch.manual_seed(0)
m = Seq2Seq(src_vocab_size=8000, tgt_vocab_size=6000, emb_size=256, hidden_size=512).to(dev)
B, L = 128, 14
src = torch.randint(4, 8000, (B, L)); lengths = torch.randint(9, L + 1, (B,)); lengths[0] = L
for i, n in enumerate(lengths): src[i, n:] = 0
tgt = torch.randint(4, 6000, (B, L + 2)); tgt[:, 0] = 2
src, lengths, tgt = src.to(dev), lengths.to(dev), tgt.to(dev)
def fb(dtype=None):
    with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
        s, n = masked_cross_entropy(m(src, lengths, tgt[:, :-1]), tgt[:, 1:], 0)
    (s / n).backward(); m.zero_grad()
def timeit(f, n=20):
    for _ in range(3): f()
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(n): f()
    torch.cuda.synchronize(); return round((time.perf_counter() - t) / n * 1000, 2)
print("H100 fwd+bwd ms fp32", timeit(fb), "bf16", timeit(lambda: fb(torch.bfloat16)), flush=True)
m.eval()
print("greedy(20) ms", timeit(lambda: greedy_search(m, src, lengths, 20), 5), "beam5(20) ms", timeit(lambda: beam_search(m, src, lengths, 5, 1.0, 20), 5), flush=True)
