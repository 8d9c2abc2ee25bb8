"""`python -m tests.tflite_export.rnn_optimize KIND`: `kstruct.optimize` with "prune(0.5) + qat" to int8 on
`test_rnn.text_model(KIND)`, in a process of its own (the calibrator's segfault would end it, not pytest);
prints the file's ops, its output dtype, its largest difference from the QAT model and the report's agreement
as one JSON line."""

import json
import sys

import numpy as np

import kstruct
import tflite_export
from tests.tflite_export.test_rnn import STEPS, VOCAB, text_model


def main(kind: str) -> None:
    model = text_model(kind)
    rng = np.random.default_rng(0)
    x = rng.integers(0, VOCAB, (96, STEPS)).astype("int32")
    y = (x[:, 0] % 3).astype("int32")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    result = kstruct.optimize(model, "prune(0.5) + qat", train_data=(x, y), epochs=1, target="int8", verbose=0)
    analysis = tflite_export.analyze(result.tflite)
    diff = np.abs(tflite_export.predict(result.tflite, x) - result.model.predict(x, verbose=0)).max()
    print(json.dumps({"ops": analysis.ops, "output": analysis.outputs[0].dtype, "max_diff": float(diff),
                      "agreement": result.report.final.agreement}))


if __name__ == "__main__":
    main(sys.argv[1])
