#include "kernels.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("row_topk", &row_topk, "the k largest values of each row and their indices");
  m.def("attend", &attend, "attention for the few queries of cached decoding");
}
