# One-off check (issue 15): float32 / bfloat16 / float16 GEMM rates of numpy and torch at several d (2 threads).
import time, numpy as np, torch
torch.set_num_threads(2)
rng=np.random.default_rng(0)
for d in (64,256,784,3200):
    N=16384; Q=2048
    X=rng.standard_normal((N,d),dtype=np.float32); q=rng.standard_normal((Q,d),dtype=np.float32)
    out=np.empty((Q,N),np.float32)
    def best(f,r=3):
        b=1e9
        for _ in range(r):
            t=time.perf_counter(); f(); b=min(b,time.perf_counter()-t)
        return b
    fl=2*N*Q*d
    tn=best(lambda: np.matmul(q,X.T,out=out))
    Xt=torch.from_numpy(X); qt=torch.from_numpy(q); ot=torch.from_numpy(out)
    tt=best(lambda: torch.mm(qt,Xt.t(),out=ot))
    Xb=Xt.bfloat16(); qb=qt.bfloat16()
    tb=best(lambda: torch.mm(qb,Xb.t()))
    ob=torch.empty((Q,N),dtype=torch.float32)
    Xh=Xt.half(); qh=qt.half()
    th=best(lambda: torch.mm(qh,Xh.t()))
    print(d, "numpy %.0f torch %.0f bf16 %.0f fp16 %.0f GFLOP/s"%(fl/tn/1e9, fl/tt/1e9, fl/tb/1e9, fl/th/1e9), flush=True)
