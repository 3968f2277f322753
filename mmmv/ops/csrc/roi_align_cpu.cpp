// RoIAlign forward on CPU, average pooling (inference only), float32 or bfloat16 features.
//
// For each box k = (batch index, x1, y1, x2, y2) in input pixels and each output bin (ph, pw):
//
//   out[k, c, ph, pw] = mean over the bin's sample grid of bilinear(features[batch, c], y, x)
//
// with the box scaled by spatial_scale (and shifted by -0.5 when `aligned`), bins of
// box_h / out_h x box_w / out_w, and a grid of sampling_ratio x sampling_ratio samples per bin
// (sampling_ratio 0: ceil(box_h / out_h) x ceil(box_w / out_w)), each at the centre of its cell.
// This is the RoIAlign of Mask R-CNN (He et al., 2017) with the aligned half-pixel shift of
// Detectron2, as mmcv's and torchvision's RoIAlign compute it: samples more than one pixel outside
// the map count as zero, samples within one pixel are clamped to the border, and a box of
// negative size is an error when aligned (clamped to 1 x 1 otherwise).
//
// The features are first laid out (N, H, W, C) in float32 (one pass, which also converts
// bfloat16), so that each sample reads its four neighbours as contiguous runs of C channels and
// every multiply-add runs along the channels, vectorised. Boxes are split over threads with
// at::parallel_for. Per channel the samples are summed in the same order as mmcv's kernel.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include "cpu_math.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

// One bilinear sample: offsets (in channel runs, i.e. y * W + x) of its four neighbours and their
// weights. A sample outside the map has all weights zero.
struct Sample {
  int64_t p1, p2, p3, p4;
  float w1, w2, w3, w4;
};

struct Geometry {
  int64_t height, width, out_h, out_w;
  float spatial_scale;
  int64_t sampling_ratio;
  bool aligned;
};

Sample bilinear_sample(float y, float x, int64_t height, int64_t width) {
  if (y < -1.0f || y > height || x < -1.0f || x > width) return {0, 0, 0, 0, 0.f, 0.f, 0.f, 0.f};
  y = std::max(y, 0.0f);
  x = std::max(x, 0.0f);
  int64_t y_low = static_cast<int64_t>(y), x_low = static_cast<int64_t>(x), y_high, x_high;
  if (y_low >= height - 1) {
    y_high = y_low = height - 1;
    y = static_cast<float>(y_low);
  } else {
    y_high = y_low + 1;
  }
  if (x_low >= width - 1) {
    x_high = x_low = width - 1;
    x = static_cast<float>(x_low);
  } else {
    x_high = x_low + 1;
  }
  const float ly = y - y_low, lx = x - x_low, hy = 1.0f - ly, hx = 1.0f - lx;
  return {y_low * width + x_low, y_low * width + x_high, y_high * width + x_low,
          y_high * width + x_high, hy * hx, hy * lx, ly * hx, ly * lx};
}

// The samples of every bin of one box, bin-major (out_h * out_w bins of grid_h * grid_w samples);
// the grid's sides go to grid_h and grid_w.
std::vector<Sample> box_samples(const float* box, const Geometry& g, int64_t* grid_h,
                                int64_t* grid_w) {
  const float offset = g.aligned ? 0.5f : 0.0f;
  const float start_w = box[1] * g.spatial_scale - offset;
  const float start_h = box[2] * g.spatial_scale - offset;
  float box_w = box[3] * g.spatial_scale - offset - start_w;
  float box_h = box[4] * g.spatial_scale - offset - start_h;
  if (g.aligned) {
    TORCH_CHECK(box_w >= 0 && box_h >= 0, "roi_align: boxes must not have negative size, got (",
                box[1], ", ", box[2], ", ", box[3], ", ", box[4], ")");
  } else {
    box_w = std::max(box_w, 1.0f);
    box_h = std::max(box_h, 1.0f);
  }
  const float bin_h = box_h / g.out_h, bin_w = box_w / g.out_w;
  *grid_h = g.sampling_ratio > 0 ? g.sampling_ratio : static_cast<int64_t>(std::ceil(bin_h));
  *grid_w = g.sampling_ratio > 0 ? g.sampling_ratio : static_cast<int64_t>(std::ceil(bin_w));
  std::vector<Sample> samples;
  samples.reserve(g.out_h * g.out_w * *grid_h * *grid_w);
  for (int64_t ph = 0; ph < g.out_h; ++ph) {
    for (int64_t pw = 0; pw < g.out_w; ++pw) {
      for (int64_t iy = 0; iy < *grid_h; ++iy) {
        const float y = start_h + ph * bin_h + (iy + 0.5f) * bin_h / *grid_h;
        for (int64_t ix = 0; ix < *grid_w; ++ix) {
          const float x = start_w + pw * bin_w + (ix + 0.5f) * bin_w / *grid_w;
          samples.push_back(bilinear_sample(y, x, g.height, g.width));
        }
      }
    }
  }
  return samples;
}

// out (C, out_h, out_w) of one box from its map (H, W, C) channels-last; acc: scratch of C floats.
MMMV_TARGET_CLONES void pool_box(const float* map, const std::vector<Sample>& samples,
                                 int64_t per_bin, int64_t bins, int64_t channels, float* acc,
                                 float* out) {
  const float inv_count = 1.0f / static_cast<float>(std::max<int64_t>(per_bin, 1));
  for (int64_t bin = 0; bin < bins; ++bin) {
    std::fill(acc, acc + channels, 0.0f);
    for (int64_t s = bin * per_bin; s < (bin + 1) * per_bin; ++s) {
      const Sample& p = samples[s];
      if (p.w1 == 0.f && p.w2 == 0.f && p.w3 == 0.f && p.w4 == 0.f) continue;
      const float* v1 = map + p.p1 * channels;
      const float* v2 = map + p.p2 * channels;
      const float* v3 = map + p.p3 * channels;
      const float* v4 = map + p.p4 * channels;
      for (int64_t c = 0; c < channels; ++c) {
        acc[c] += p.w1 * v1[c] + p.w2 * v2[c] + p.w3 * v3[c] + p.w4 * v4[c];
      }
    }
    for (int64_t c = 0; c < channels; ++c) out[c * bins + bin] = acc[c] * inv_count;
  }
}

// features: (N, C, H, W) float32 or bfloat16; rois: (K, 5) float32 (batch index, x1, y1, x2, y2).
// Returns (K, C, out_h, out_w) float32.
torch::Tensor roi_align_forward(torch::Tensor features, torch::Tensor rois, int64_t out_h,
                                int64_t out_w, double spatial_scale, int64_t sampling_ratio,
                                bool aligned) {
  TORCH_CHECK(features.device().is_cpu() && rois.device().is_cpu(),
              "roi_align: CPU tensors expected");
  TORCH_CHECK(features.dim() == 4, "roi_align: features must be (N, C, H, W), got ",
              features.sizes());
  TORCH_CHECK(features.scalar_type() == at::kFloat || features.scalar_type() == at::kBFloat16,
              "roi_align: features must be float32 or bfloat16, got ", features.scalar_type());
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, "roi_align: rois must be (K, 5), got ",
              rois.sizes());
  TORCH_CHECK(out_h > 0 && out_w > 0, "roi_align: output size must be positive");
  const int64_t batch = features.size(0), channels = features.size(1);
  const Geometry g{features.size(2), features.size(3), out_h, out_w,
                   static_cast<float>(spatial_scale), sampling_ratio, aligned};
  const auto boxes = rois.to(at::kFloat).contiguous();
  const int64_t n_boxes = boxes.size(0);
  auto out = torch::zeros({n_boxes, channels, out_h, out_w}, features.options().dtype(at::kFloat));
  if (n_boxes == 0) return out;
  const auto maps = features.permute({0, 2, 3, 1}).to(at::kFloat).contiguous();  // (N, H, W, C)
  const float* map_data = maps.data_ptr<float>();
  const float* box_data = boxes.data_ptr<float>();
  float* out_data = out.data_ptr<float>();
  const int64_t bins = out_h * out_w, map_size = g.height * g.width * channels;
  for (int64_t k = 0; k < n_boxes; ++k) {
    const float index = box_data[k * 5];
    TORCH_CHECK(index >= 0 && index < batch && index == std::floor(index),
                "roi_align: box ", k, " has batch index ", index, ", expected 0..", batch - 1);
  }
  at::parallel_for(0, n_boxes, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> acc(channels);
    for (int64_t k = begin; k < end; ++k) {
      const float* box = box_data + k * 5;
      int64_t grid_h, grid_w;
      const auto samples = box_samples(box, g, &grid_h, &grid_w);
      pool_box(map_data + static_cast<int64_t>(box[0]) * map_size, samples, grid_h * grid_w,
               bins, channels, acc.data(), out_data + k * channels * bins);
    }
  });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &roi_align_forward,
        "out (K, C, out_h, out_w) float32 = roi_align(features, rois, out_h, out_w, "
        "spatial_scale, sampling_ratio, aligned)");
}
