// Node: a handle to one node of a Model (its input or a layer applied to earlier nodes).
#pragma once

namespace minires {

struct Node {
  int id = -1;
};

}  // namespace minires
