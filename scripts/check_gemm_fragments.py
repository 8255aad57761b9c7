# Checks the index arithmetic of kernels/gemm.cuh without a GPU: simulates one K-step of
# every warp with the PTX ISA semantics of ldmatrix (.trans) and mma.m16n8k16, for all four
# operand layouts, against a direct product. Mirror any change to a_fragment / b_fragments /
# the epilogue in gemm.cuh here. Needs numpy: python3 scripts/check_gemm_fragments.py
# Simulates one warp's k16 step of kernels/gemm.cuh with the PTX-documented semantics of
# ldmatrix(.trans) and mma.m16n8k16, for every operand layout, against a direct product.
import numpy as np
BM=BN=128; BK=32; PAD=8; KP=BK+PAD; MP=BM+PAD
rng=np.random.default_rng(0)

def ldmatrix(tile_flat, addrs, trans):
    # addrs[lane] = element offset of the row start given by that lane; returns regs[lane][i] = (e0, e1)
    out=[[None]*4 for _ in range(32)]
    for i in range(4):
        rows=[tile_flat[addrs[8*i+j]:addrs[8*i+j]+8] for j in range(8)]
        M=np.array(rows)  # 8x8, row j from lane 8i+j
        for T in range(32):
            if not trans: out[T][i]=(M[T//4, 2*(T%4)], M[T//4, 2*(T%4)+1])
            else: out[T][i]=(M[2*(T%4), T//4], M[2*(T%4)+1, T//4])
    return out

def a_frag(tile, layout, m0, k0):
    addrs=[]
    for lane in range(32):
        if layout=='K':
            row=m0+lane%16; col=k0+(lane//16)*8; addrs.append(row*KP+col)
        else:
            k=k0+lane%8+(lane//16)*8; m=m0+((lane//8)%2)*8; addrs.append(k*MP+m)
    return ldmatrix(tile, addrs, layout!='K')

def b_frag(tile, layout, n0, k0):
    addrs=[]
    for lane in range(32):
        if layout=='K':
            n=n0+lane%8+(lane//16)*8; k=k0+((lane//8)%2)*8; addrs.append(n*KP+k)
        else:
            k=k0+lane%8+((lane//8)%2)*8; n=n0+(lane//16)*8; addrs.append(k*MP+n)
    return ldmatrix(tile, addrs, layout!='K')

def mma(acc, a, b0, b1):
    # acc[T] = [c0,c1,c2,c3]; build full A (16x16), B (16x8) from fragments
    A=np.zeros((16,16)); B=np.zeros((16,8))
    for T in range(32):
        g,t=T//4,T%4
        for reg,(r,c) in enumerate([(g,2*t),(g+8,2*t),(g,2*t+8),(g+8,2*t+8)]):
            A[r,c],A[r,c+1]=a[T][reg]
        B[2*t,g],B[2*t+1,g]=b0[T]; B[2*t+8,g],B[2*t+9,g]=b1[T]
    C=A@B
    for T in range(32):
        g,t=T//4,T%4
        acc[T][0]+=C[g,2*t]; acc[T][1]+=C[g,2*t+1]; acc[T][2]+=C[g+8,2*t]; acc[T][3]+=C[g+8,2*t+1]

for la in 'KM':
  for lb in 'KM':
    Am=rng.standard_normal((BM,BK)); Bm=rng.standard_normal((BN,BK))  # logical A[m][k], B[n][k]
    ta=np.zeros(BM*KP); tb=np.zeros(BM*KP)
    for m in range(BM):
        for k in range(BK):
            if la=='K': ta[m*KP+k]=Am[m,k]
            else: ta[k*MP+m]=Am[m,k]
            if lb=='K': tb[m*KP+k]=Bm[m,k]
            else: tb[k*MP+m]=Bm[m,k]
    for warp in range(8):
        wm=(warp//4)*64; wn=(warp%4)*32
        acc=[[[ [0.0]*4 for _ in range(32)] for j in range(4)] for i in range(4)]
        for ks in range(0,BK,16):
            a=[a_frag(ta,la,wm+i*16,ks) for i in range(4)]
            b=[b_frag(tb,lb,wn+j*16,ks) for j in range(2)]
            for i in range(4):
                for j in range(4):
                    b0=[b[j//2][T][(j%2)*2] for T in range(32)]; b1=[b[j//2][T][(j%2)*2+1] for T in range(32)]
                    mma(acc[i][j], a[i], b0, b1)
        ref=Am@Bm.T
        for i in range(4):
            for j in range(4):
                for T in range(32):
                    for e in range(4):
                        row=wm+i*16+T//4+(e//2)*8; col=wn+j*8+(T%4)*2+(e%2)
                        assert abs(acc[i][j][T][e]-ref[row,col])<1e-9, (la,lb,warp,i,j,T,e)
    print(f"A {la}-major, B {lb}-major: all 8 warps match the direct product")
