#include "kernels.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  // without the interpreter lock, as torch's own operators: `decode.workers` run side by side
  m.def("row_topk", &row_topk, "the k largest values of each row and their indices",
        py::call_guard<py::gil_scoped_release>());
  m.def("attend", &attend, "attention for the few queries of cached decoding",
        py::call_guard<py::gil_scoped_release>());
}
