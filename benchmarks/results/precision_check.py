# One-off check (issue 15): --precision bfloat16 vs float32 on 60k x 10k Fashion-MNIST pixels; run with PYTHONPATH=. 
import numpy as np, time, os, torch
torch.set_num_threads(2)
from knntools.io.datasets import load_dataset
from knntools.search import make_index
from knntools.search.exact import gemm_engine
tr=load_dataset("fashion-mnist", split="train", data_dir="/usr/share/datasets/fashion-mnist").X.reshape(-1,784)
te=load_dataset("fashion-mnist", split="test", data_dir="/usr/share/datasets/fashion-mnist").X.reshape(-1,784)
X=np.ascontiguousarray(tr[:60000]); Q=np.ascontiguousarray(te[:10000])
print("engine", gemm_engine(785,2))
for prec in ("float32","bfloat16"):
  for k in (10,75):
    idx=make_index("exact",precision=prec,device="cpu",num_threads=2).fit(X)
    t=time.perf_counter(); d,i=idx.kneighbors(Q,k); dt=time.perf_counter()-t
    print(prec,k,"%.2f s"%dt, "bound@180: %.2f"%(2*60000*10000*784/180e9), idx.last_stats_, flush=True)
