# facekit export --format onnx: converts the TorchScript module facekit traced into ONNX with
# PyTorch's own exporter, checks the file, and prints what it wrote as one JSON line on stdout.
# Embedded in the facekit binary (include_str! in export.rs) and run by the Python it is given.
#
# argv: TORCHSCRIPT OUT_TMP IMAGE_SIZE OPSET INPUT_NAME OUTPUT_NAME BATCH_AXIS_NAME
# Exit 3 with {"missing": [...]} on stdout when torch or onnx cannot be imported, so that facekit
# can say what to install; any other failure is a traceback on stderr and a non-zero exit.
import json
import sys

missing = []
for name in ("torch", "onnx"):
    try:
        __import__(name)
    except Exception as e:  # a broken install raises more than ImportError
        missing.append(f"{name} ({type(e).__name__}: {e})")
if missing:
    print(json.dumps({"missing": missing, "python": sys.executable}))
    sys.exit(3)

import warnings

import onnx
import torch

ts_path, out, size, opset, input_name, output_name, batch = sys.argv[1:8]
size, opset = int(size), int(opset)

module = torch.jit.load(ts_path, map_location="cpu").eval()
example = torch.zeros(2, 3, size, size)
with warnings.catch_warnings():
    # The TorchScript (legacy) exporter is the only one that takes a ScriptModule: the dynamo
    # exporter needs the Python nn.Module, which a network written in Rust does not have. Its
    # deprecation notice says nothing about this file, so it is not shown to facekit's users.
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.simplefilter("ignore", FutureWarning)
    with torch.no_grad():
        torch.onnx.export(
            module,
            (example,),
            out,
            dynamo=False,
            opset_version=opset,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: batch}, output_name: {0: batch}},
            do_constant_folding=True,
        )

# full_check also runs ONNX shape inference, which catches a graph whose shapes do not line up.
onnx.checker.check_model(out, full_check=True)
model = onnx.load(out)


def dims(value_info):
    return [d.dim_param if d.HasField("dim_param") else d.dim_value for d in value_info.type.tensor_type.shape.dim]


def elem_type(value_info):
    return onnx.TensorProto.DataType.Name(value_info.type.tensor_type.elem_type)


initializers = {i.name for i in model.graph.initializer}
inputs = [i for i in model.graph.input if i.name not in initializers]
print(
    json.dumps(
        {
            "inputs": [{"name": i.name, "dims": dims(i), "type": elem_type(i)} for i in inputs],
            "outputs": [{"name": o.name, "dims": dims(o), "type": elem_type(o)} for o in model.graph.output],
            "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
            "ir_version": model.ir_version,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "python": sys.executable,
        }
    )
)
