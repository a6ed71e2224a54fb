// YOLOv10 post-processing kernels (NVRTC, compiled with --fmad=false so that every float op is
// rounded on its own, as NumPy does). common/gpu_postprocess.py launches them and holds the
// NumPy emulation of these exact steps (postprocess_reference).
//
// Ranking key of a candidate (anchor a of image b, score s = its best class score, float32):
//   key = (~ord(s)) << 32 | a        ord(): float bits -> unsigned, monotone; -0 counted as +0
// Ascending keys = score descending, ties by ascending anchor index (a stable descending sort).

#define CHUNK 4096          // keys sorted per block in shared memory (then merged by rank)
#define NMS_CH 256          // candidates resolved per step of the greedy pass
#define NMS_THREADS 1024    // = NMS_CH * 4: four threads per candidate (4 box sides / 4 mask words)
#define KCAP 512            // kept boxes cached in shared memory (the rest are read from the output)
#define IOU_EPS 1e-5f       // float32 IoU further than this from the threshold decides; else float64

typedef unsigned long long u64;

__device__ __forceinline__ float ld(const void* p, size_t i, int half)
{
    if (half) {
        unsigned short h = ((const unsigned short*)p)[i];
        float f;
        asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
        return f;
    }
    return ((const float*)p)[i];
}

__device__ __forceinline__ unsigned int ord_f32(float s)
{
    if (s == 0.0f) s = 0.0f;  // -0 == +0 for the ranking
    unsigned int u = __float_as_uint(s);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ float score_of(u64 key)
{
    unsigned int o = ~(unsigned int)(key >> 32);
    unsigned int u = (o & 0x80000000u) ? (o & 0x7fffffffu) : ~o;
    return __uint_as_float(u);
}

// float64, rounded once: equal to yolov10.sigmoid_f32 (NumPy's float64 exp) for any faithful exp
__device__ __forceinline__ float sigmoid_f32(float x)
{
    return (float)(1.0 / (1.0 + exp(-(double)x)));
}

// ----------------------------------------------------------------------------- 1. scores

extern "C" __global__ void zero_ints(int* __restrict__ p, int n)
{
    for (int i = threadIdx.x; i < n; i += blockDim.x) p[i] = 0;
}

// src: [B, C, A]; classes start at channel c0 (64 for dfl144: logits -> sigmoid; 4 for raw84: scores).
// Anchors whose best class score >= conf get a key (in any order: the sort fixes it) and a class.
extern "C" __global__ void yolo_scores(const void* __restrict__ src, int half, int C, int A, int c0,
                                       int apply_sigmoid, float conf, u64* __restrict__ keys,
                                       int* __restrict__ cls, int* __restrict__ count)
{
    int a = blockIdx.x * blockDim.x + threadIdx.x;
    int b = blockIdx.y;
    if (a >= A) return;
    size_t base = (size_t)b * C * A + a;
    float best = 0.0f;
    int arg = -1, nan = 0;
    for (int c = c0; c < C; ++c) {
        float v = ld(src, base + (size_t)c * A, half);
        if (v != v) { nan = 1; break; }            // NumPy's max is NaN: never >= conf
        if (arg < 0 || v > best) { best = v; arg = c - c0; }  // first argmax (of the logits, for dfl144)
    }
    if (nan || arg < 0) return;
    if (apply_sigmoid) {
        // the score is the rounded sigmoid of the best logit (both monotone); the class is the first one
        // whose rounded sigmoid equals it. Only logits within 1 of the best (or saturating: > 15 rounds
        // towards 1.0, < -90 underflows towards 0) can round to the same float32: the others are skipped.
        float lmax = best;
        best = sigmoid_f32(lmax);
        if (!(best >= conf)) return;
        for (int c = c0; c < C; ++c) {
            float v = ld(src, base + (size_t)c * A, half);
            if (((double)v >= (double)lmax - 1.0 || v > 15.0f || v < -90.0f) && sigmoid_f32(v) == best) {
                arg = c - c0;
                break;
            }
        }
    }
    if (!(best >= conf)) return;
    int pos = atomicAdd(count + b, 1);
    keys[(size_t)b * A + pos] = ((u64)(~ord_f32(best)) << 32) | (u64)(unsigned int)a;
    cls[(size_t)b * A + a] = arg;
}

// ----------------------------------------------------------------------------- 2. sort

// Sorts chunk blockIdx.x (CHUNK keys) of image blockIdx.y ascending, in place (bitonic, shared memory).
extern "C" __global__ void sort_chunks(u64* __restrict__ keys, const int* __restrict__ count, int A)
{
    __shared__ u64 s[CHUNK];
    int b = blockIdx.y, n = min(count[b], A);
    int start = blockIdx.x * CHUNK;
    if (start >= n) return;
    int len = min(CHUNK, n - start);
    int p = 1;
    while (p < len) p <<= 1;
    u64* k = keys + (size_t)b * A + start;
    for (int i = threadIdx.x; i < p; i += blockDim.x) s[i] = i < len ? k[i] : ~0ULL;
    __syncthreads();
    for (int size = 2; size <= p; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = threadIdx.x; i < p; i += blockDim.x) {
                int j = i ^ stride;
                if (j > i) {
                    u64 x = s[i], y = s[j];
                    bool up = (i & size) == 0;
                    if ((x > y) == up) { s[i] = y; s[j] = x; }
                }
            }
            __syncthreads();
        }
    }
    for (int i = threadIdx.x; i < len; i += blockDim.x) k[i] = s[i];
}

// Where an image has more than CHUNK candidates: each key's final rank is its rank in its own
// sorted chunk plus the number of smaller keys in every other chunk (binary search; keys are unique).
extern "C" __global__ void merge_chunks(const u64* __restrict__ keys, u64* __restrict__ sorted,
                                        const int* __restrict__ count, int A, int topk)
{
    int b = blockIdx.y, n = min(count[b], A);
    if (n <= CHUNK) return;  // the greedy pass reads the single sorted chunk directly
    int c = blockIdx.x, start = c * CHUNK;
    if (start >= n) return;
    int len = min(CHUNK, n - start);
    const u64* k = keys + (size_t)b * A;
    int chunks = (n + CHUNK - 1) / CHUNK;
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
        u64 key = k[start + i];
        int rank = i;
        for (int o = 0; o < chunks; ++o) {
            if (o == c) continue;
            int lo = 0, hi = min(CHUNK, n - o * CHUNK);
            const u64* ko = k + o * CHUNK;
            while (lo < hi) {
                int mid = (lo + hi) >> 1;
                if (ko[mid] < key) lo = mid + 1; else hi = mid;
            }
            rank += lo;
        }
        if (rank < topk) sorted[(size_t)b * A + rank] = key;
    }
}

// ----------------------------------------------------------------------------- 3. greedy NMS

// NumPy's maximum/minimum: NaN if either is NaN.
__device__ __forceinline__ double np_max(double a, double b) { return (a != a || b != b) ? (a + b) : (a > b ? a : b); }
__device__ __forceinline__ double np_min(double a, double b) { return (a != a || b != b) ? (a + b) : (a < b ? a : b); }

// yolov10.iou_matrix in float64, op for op: IoU(p, q) > thr, p the earlier (higher-ranked) box.
__device__ bool over_f64(float4 p, float4 q, double thr)
{
    double iw = np_max(np_min((double)p.z, (double)q.z) - np_max((double)p.x, (double)q.x), 0.0);
    double ih = np_max(np_min((double)p.w, (double)q.w) - np_max((double)p.y, (double)q.y), 0.0);
    double inter = iw * ih;
    double area_p = np_max((double)p.z - (double)p.x, 0.0) * np_max((double)p.w - (double)p.y, 0.0);
    double area_q = np_max((double)q.z - (double)q.x, 0.0) * np_max((double)q.w - (double)q.y, 0.0);
    double uni = area_p + area_q - inter;
    double iou = uni > 0.0 ? inter / uni : 0.0;
    return iou > thr;
}

// The same decision, usually from float32: its IoU is within ~2e-6 of the exact one for finite boxes
// whose union is not tiny, so a float32 IoU more than IOU_EPS away from the threshold decides as
// float64 would; anything closer (or odd: inf, NaN, tiny) is recomputed in float64.
__device__ __forceinline__ bool suppresses(float4 p, float4 q, float thr_f, double thr)
{
    float iw = fmaxf(fminf(p.z, q.z) - fmaxf(p.x, q.x), 0.0f);
    float ih = fmaxf(fminf(p.w, q.w) - fmaxf(p.y, q.y), 0.0f);
    float inter = iw * ih;
    float uni = fmaxf(p.z - p.x, 0.0f) * fmaxf(p.w - p.y, 0.0f) + fmaxf(q.z - q.x, 0.0f) * fmaxf(q.w - q.y, 0.0f)
                - inter;
    float all = p.x + p.y + p.z + p.w + q.x + q.y + q.z + q.w;  // NaN or inf when a coordinate is
    if (all - all == 0.0f && uni > 1e-20f && uni < 1e30f) {
        float iou = inter / uni;
        if (iou > thr_f + IOU_EPS) return true;
        if (iou < thr_f - IOU_EPS) return false;
    }
    return over_f64(p, q, thr);
}

// One block per image. layout: 0 dfl144, 1 raw84. anchors: [3, A] (x, y, stride) for dfl144.
// out_rows: [B, max_det, 6] x1, y1, x2, y2, score, class; out_counts: [B].
extern "C" __global__ void __launch_bounds__(NMS_THREADS)
greedy_nms(const void* __restrict__ src, int half, int layout, int C, int A,
           const u64* __restrict__ keys, const u64* __restrict__ sorted, const int* __restrict__ count,
           const int* __restrict__ cls, const float* __restrict__ anchors, int topk, int max_det,
           float thr_f, double thr, int* __restrict__ out_counts, float* __restrict__ out_rows)
{
    __shared__ float s_side[4][NMS_CH];
    __shared__ float4 s_box[NMS_CH];
    __shared__ int s_cls[NMS_CH];
    __shared__ float s_score[NMS_CH];
    __shared__ int s_dead[NMS_CH];
    __shared__ u64 s_mask[NMS_CH][4];
    __shared__ unsigned int s_deadbits[NMS_CH / 32];
    __shared__ float4 s_kbox[KCAP];
    __shared__ int s_kcls[KCAP];
    __shared__ int s_nk, s_done;

    int b = blockIdx.x, tid = threadIdx.x, t = tid & (NMS_CH - 1), g = tid / NMS_CH;
    int total = min(count[b], A);
    int n = min(total, topk);
    const u64* list = (total <= CHUNK ? keys : sorted) + (size_t)b * A;
    const int* cls_b = cls + (size_t)b * A;
    size_t src_b = (size_t)b * C * A;
    float* rows = out_rows + (size_t)b * max_det * 6;
    if (tid == 0) { s_nk = 0; s_done = (max_det <= 0); }
    __syncthreads();

    for (int start = 0; start < n && !s_done; start += NMS_CH) {
        int m = min(NMS_CH, n - start);
        int nk = s_nk;
        // decode: thread (t, g) computes side g of candidate t
        if (t < m) {
            unsigned int a = (unsigned int)(list[start + t] & 0xffffffffULL);
            float v;
            if (layout == 0) {
                double x[16], mx;
                size_t o = src_b + (size_t)(g * 16) * A + a;
                for (int k = 0; k < 16; ++k) x[k] = (double)ld(src, o + (size_t)k * A, half);
                mx = x[0];
                for (int k = 1; k < 16; ++k) mx = fmax(mx, x[k]);
                // softmax expectation as yolov10.dfl_distances: float64, bins summed in order, one rounding
                double num = 0.0, den = 0.0;
                for (int k = 0; k < 16; ++k) {
                    double e = exp(x[k] - mx);
                    num = num + e * (double)k;
                    den = den + e;
                }
                v = (float)((num / den) * (double)anchors[2 * A + a]);
            } else {
                v = ld(src, src_b + (size_t)g * A + a, half);
            }
            s_side[g][t] = v;
        }
        __syncthreads();
        if (g == 0) {
            if (t < m) {
                u64 key = list[start + t];
                unsigned int a = (unsigned int)(key & 0xffffffffULL);
                float4 box;
                if (layout == 0) {
                    float px = anchors[a], py = anchors[A + a];
                    box = make_float4(px - s_side[0][t], py - s_side[1][t], px + s_side[2][t], py + s_side[3][t]);
                } else {
                    float cx = s_side[0][t], cy = s_side[1][t], w = s_side[2][t], h = s_side[3][t];
                    box = make_float4(cx - w / 2.0f, cy - h / 2.0f, cx + w / 2.0f, cy + h / 2.0f);
                }
                s_box[t] = box;
                s_cls[t] = cls_b[a];
                s_score[t] = score_of(key);
            }
            s_dead[t] = t >= m;
        }
        __syncthreads();
        // against the boxes kept so far: thread (t, g) checks kept g, g+4, ...
        if (t < m) {
            float4 q = s_box[t];
            int c = s_cls[t];
            for (int k = g; k < nk; k += 4) {
                int kc;
                float4 p;
                if (k < KCAP) { kc = s_kcls[k]; p = s_kbox[k]; }
                else { const float* r = rows + (size_t)k * 6; kc = (int)r[5]; p = make_float4(r[0], r[1], r[2], r[3]); }
                if (kc == c && suppresses(p, q, thr_f, thr)) { s_dead[t] = 1; break; }
                if (s_dead[t]) break;
            }
        }
        __syncthreads();
        // inside the chunk: row t, word g: bit j set when t < j and t suppresses j
        {
            u64 bits = 0;
            if (t < m && !s_dead[t]) {
                float4 p = s_box[t];
                int c = s_cls[t];
                int j0 = max(g * 64, t + 1), j1 = min(g * 64 + 64, m);
                for (int j = j0; j < j1; ++j)
                    if (!s_dead[j] && s_cls[j] == c && suppresses(p, s_box[j], thr_f, thr)) bits |= 1ULL << (j - g * 64);
            }
            s_mask[t][g] = bits;
        }
        if (tid < NMS_CH) {
            unsigned int bal = __ballot_sync(0xffffffffu, s_dead[tid] != 0);
            if ((tid & 31) == 0) s_deadbits[tid >> 5] = bal;
        }
        __syncthreads();
        if (tid == 0) {
            u64 removed[4];
            for (int w = 0; w < 4; ++w) removed[w] = (u64)s_deadbits[2 * w] | ((u64)s_deadbits[2 * w + 1] << 32);
            int done = 0;
            for (int w = 0; w < 4 && !done; ++w) {
                while (true) {
                    u64 avail = ~removed[w];
                    if (!avail) break;
                    int i = w * 64 + __ffsll((long long)avail) - 1;
                    removed[w] |= 1ULL << (i - w * 64);
                    float4 box = s_box[i];
                    float* r = rows + (size_t)nk * 6;
                    r[0] = box.x; r[1] = box.y; r[2] = box.z; r[3] = box.w;
                    r[4] = s_score[i]; r[5] = (float)s_cls[i];
                    if (nk < KCAP) { s_kbox[nk] = box; s_kcls[nk] = s_cls[i]; }
                    if (++nk >= max_det) { done = 1; break; }
                    for (int w2 = w; w2 < 4; ++w2) removed[w2] |= s_mask[i][w2];
                }
            }
            s_nk = nk;
            s_done = done;
        }
        __syncthreads();
    }
    if (tid == 0) out_counts[b] = s_nk;
}

// ----------------------------------------------------------------------------- e2e

// src: [B, K, 6]; rows with score >= conf in the model's order, the first max_det of them.
extern "C" __global__ void e2e_select(const void* __restrict__ src, int half, int K, float conf, int max_det,
                                      int* __restrict__ out_counts, float* __restrict__ out_rows)
{
    __shared__ int s_warp[32];
    __shared__ int s_base;
    int b = blockIdx.x, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;
    size_t base_in = (size_t)b * K * 6;
    float* rows = out_rows + (size_t)b * max_det * 6;
    if (tid == 0) s_base = 0;
    __syncthreads();
    for (int start = 0; start < K && s_base < max_det; start += blockDim.x) {
        int r = start + tid;
        bool keep = r < K && ld(src, base_in + (size_t)r * 6 + 4, half) >= conf;
        unsigned int bal = __ballot_sync(0xffffffffu, keep);
        if (lane == 0) s_warp[warp] = __popc(bal);
        __syncthreads();
        int before = 0, all = 0;
        for (int w = 0; w < warps; ++w) { all += s_warp[w]; if (w < warp) before += s_warp[w]; }
        int pos = s_base + before + __popc(bal & ((1u << lane) - 1u));
        if (keep && pos < max_det)
            for (int c = 0; c < 6; ++c) rows[(size_t)pos * 6 + c] = ld(src, base_in + (size_t)r * 6 + c, half);
        __syncthreads();
        if (tid == 0) s_base += all;
        __syncthreads();
    }
    if (tid == 0) out_counts[b] = max(0, min(s_base, max_det));
}
