"""What iresnet_ref.py and mobilefacenet_ref.py write for the Rust tests, once for both: a random
input, the eval-mode outputs (fp32; bfloat16 autocast as arcface_torch runs it, the trunk under
autocast and the embedding layers on its output cast to fp32; and everything under autocast, to
tell the two apart), the weights and the parameter shapes. The network needs `trunk` and `tail`.
"""

import json
import os

import torch


def write_reference(net, gen, batch, size, out):
    """DIR/weights.safetensors (the state_dict, num_batches_tracked included), DIR/io.safetensors
    (`input`, `output`, `output_bf16`, `output_bf16_all`) and DIR/shapes.json (name -> shape,
    num_batches_tracked left out) for `net` in eval mode on `batch` random images of `size`."""
    from safetensors.torch import save_file

    net.eval()
    x = torch.rand((batch, 3, size, size), generator=gen) * 2 - 1
    with torch.no_grad():
        y = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            t = net.trunk(x)
            y_all = net.tail(t).float()
        y_bf16 = net.tail(t.float())
    os.makedirs(out, exist_ok=True)
    sd = {k: v.contiguous() for k, v in net.state_dict().items()}
    save_file(sd, os.path.join(out, "weights.safetensors"))
    save_file({"input": x, "output": y, "output_bf16": y_bf16, "output_bf16_all": y_all}, os.path.join(out, "io.safetensors"))
    shapes = {k: list(v.shape) for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    with open(os.path.join(out, "shapes.json"), "w") as f:
        json.dump(shapes, f)
