// Kernels that misuse (or use rightly) what the host runtime models, for the crate's tests
// of the runtime itself (src/cuda/emulator_probes_tests.rs): they show that a missing
// wait or a lost hand-over fails there as it would misbehave on a GPU. Compiled for the
// host only (host-kernels/build.rs), never by nvcc.
#include "gemm_wgmma.cuh"

using namespace bone_ptx;

// Two warps share one 16-byte stage and its mbarrier, whose phase takes 33 arrivals:
// lane 0 of warp 1 copies src[0..4) into the stage with cp.async, and warp 1's 32 lanes
// arrive (cp.async's arrive-on, noinc). After a block barrier (warp 1 has issued its copy
// and arrived), thread 0 reads the stage into out[0..4): when `wait` is set, after its
// own arrival completed the phase and its wait returned; else with the phase one arrival
// short. Dynamic shared memory: 32 bytes (the stage, then the barrier).
extern "C" __global__ void bone_probe_stage_handover(const float* src, float* out, int wait) {
    unsigned char* smem = dynamic_smem();
    uint64_t* full = reinterpret_cast<uint64_t*>(smem + 16);
    if (threadIdx.x == 0) mbarrier_init(full, 33);
    __syncthreads();
    if (threadIdx.x >= 32) {
        if (threadIdx.x == 32) copy16(smem, src, true);
        copy_arrive(full);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        if (wait) {
            mbarrier_arrive(full);
            mbarrier_wait(full, 0);
        }
        for (int i = 0; i < 4; ++i) out[i] = reinterpret_cast<const float*>(smem)[i];
    }
}

// One thread waits for a phase no one completes. Dynamic shared memory: 8 bytes.
extern "C" __global__ void bone_probe_wait_forever(int count) {
    uint64_t* bar = reinterpret_cast<uint64_t*>(dynamic_smem());
    if (threadIdx.x == 0) mbarrier_init(bar, count);
    __syncthreads();
    mbarrier_wait(bar, 0);
}

// A cp.async copy whose 16 bytes cover an mbarrier. Dynamic shared memory: 32 bytes.
extern "C" __global__ void bone_probe_copy_onto_barrier(const float* src) {
    unsigned char* smem = dynamic_smem();
    if (threadIdx.x == 0) mbarrier_init(reinterpret_cast<uint64_t*>(smem + 8), 1);
    __syncthreads();
    if (threadIdx.x == 0) copy16(smem, src, true);
}

// An arrival on an mbarrier no thread initialised. Dynamic shared memory: 8 bytes.
extern "C" __global__ void bone_probe_uninitialised_barrier() {
    mbarrier_arrive(reinterpret_cast<uint64_t*>(dynamic_smem()));
}

// A 16-byte load of eight bf16 from `src` + `offset` elements (as the passes of
// adapter_passes.cu read their rows): faults on a GPU unless 16-byte aligned.
extern "C" __global__ void bone_probe_vector_load(const __nv_bfloat16* src, int offset, float* out) {
    const Eight<__nv_bfloat16> v = load8(src + offset);
    out[0] = to_f32(v.v[7]);
}

// A value declared warp-uniform that differs between lanes.
extern "C" __global__ void bone_probe_divergent_uniform(int* out) { out[threadIdx.x] = warp_uniform(threadIdx.x); }

// One warpgroup queues D[64 x 64] += A B^T (k = 16) from shared memory (A, then B, each
// in the GEMM's 64-row layout of 8 KiB, zeros), then, when `change` is set, thread 0
// writes A's first element before the wait that retires the product. Dynamic shared
// memory: 16 KiB.
extern "C" __global__ void bone_probe_operand_changes_in_flight(int change) {
    unsigned char* smem = dynamic_smem();
    for (int i = threadIdx.x; i < 16384; i += 128) smem[i] = 0;
    __syncthreads();
    float acc[32] = {};
    wgmma_fence();
    wgmma<__nv_bfloat16, 64, 0, 0>(acc, bone_wgmma::descriptor(smem), bone_wgmma::descriptor(smem + 8192));
    wgmma_commit();
    if (change && threadIdx.x == 0) smem[0] = 1;
    wgmma_wait<0>();
}

// Thread 0 writes a shared cell that thread 32 then reads into out[0], with a block
// barrier in between where `barrier` is set. Dynamic shared memory: 4 bytes.
extern "C" __global__ void bone_probe_write_then_read(float* out, int barrier) {
    float* cell = reinterpret_cast<float*>(dynamic_smem());
    if (threadIdx.x == 0) *cell = 1.5f;
    if (barrier) __syncthreads();
    if (threadIdx.x == 32) out[0] = *cell;
}

// Thread 0 copies src[0..4) with cp.async to dynamic shared memory at byte `offset`.
extern "C" __global__ void bone_probe_copy_to(const float* src, int offset) {
    if (threadIdx.x == 0) copy16(dynamic_smem() + offset, src, true);
    copy_commit();
    copy_wait<0>();
}

// One warp's shared-memory accesses at lane * `pitch` bytes (a multiple of 16), for the
// bank counts: a 16-byte cp.async, an ldmatrix.x4 of the 32 rows there, and a pair of f32
// stored at once (8 bytes). Where `diverge` is set, odd lanes store their pair before
// their copy. Dynamic shared memory: 32 * pitch bytes.
extern "C" __global__ void bone_probe_bank_pattern(const float* src, int pitch, int diverge) {
    unsigned char* mine = dynamic_smem() + threadIdx.x * pitch;
    const bool pair_first = diverge && threadIdx.x % 2 == 1;
    if (pair_first) bone_gemm_common::store2<float>(reinterpret_cast<float*>(mine), 1.0f, 2.0f);
    copy16(mine, src, true);
    copy_commit();
    copy_wait<0>();
    uint32_t rows[4];
    ldmatrix_x4(rows, mine);
    if (!pair_first) bone_gemm_common::store2<float>(reinterpret_cast<float*>(mine), 1.0f, 2.0f);
}
