"""A deliberately naive iRPE attention for tests: pure-Python buckets and explicit loops over
query and key pairs, written from the reference facts, sharing no code with the package."""

import math

import torch


def g(x, alpha, beta, gamma):
    if abs(x) <= alpha:
        return int(round(x))
    v = alpha + math.log(abs(x) / alpha) / math.log(gamma / alpha) * (beta - alpha)
    v = min(beta, round(v))
    return int(math.copysign(1, x) * v)  # int() truncates toward zero


def bucket(method, ratio, qi, kj, width):
    """Bucket(s) of query token qi relative to key token kj on a map of this width."""
    alpha, beta, gamma = ratio, 2 * ratio, 8 * ratio
    B = int(beta)
    dr = qi // width - kj // width
    dc = qi % width - kj % width
    if method == "product":
        return (g(dr, alpha, beta, gamma) + B) * (2 * B + 1) + g(dc, alpha, beta, gamma) + B
    if method == "cross":
        return g(dr, alpha, beta, gamma) + B, g(dc, alpha, beta, gamma) + B
    if method == "euc":
        return g(round(math.sqrt(dr * dr + dc * dc)), alpha, beta, gamma) + B
    return g(dr * dr + dc * dc, alpha, beta, gamma) + B


def _tables(attn, side):
    enc = getattr(attn, f"rpe_{side}", None)
    if enc is None:
        return None
    if enc.spec.method == "cross":
        return [enc.rp_rows, enc.rp_cols]
    return [enc]


def _param(t):
    return t.lookup_table_bias if hasattr(t, "lookup_table_bias") else t.lookup_table_weight


def naive_attention(attn, qk_in, v_in, key_padding_mask, width):
    """Section 4 of the reference facts, literally, for a MultiheadAttention ``attn``."""
    spec = attn.rpe
    B, L, E = qk_in.shape
    nh = attn.num_heads
    d = E // nh
    s = d ** -0.5
    wq, wk, wv = attn.in_proj_weight.chunk(3)
    bq, bk, bv = attn.in_proj_bias.chunk(3)
    q, k, v = qk_in @ wq.T + bq, qk_in @ wk.T + bk, v_in @ wv.T + bv
    tabs = {side: _tables(attn, side) for side in "qkv"}

    def buckets(i, j):
        b = bucket(spec.method, spec.ratio, i, j, width)
        return list(b) if isinstance(b, tuple) else [b]

    rows = []
    for b in range(B):
        heads_out = []
        for h in range(nh):
            hp = 0 if spec is None or spec.shared_head else h
            qh, kh, vh = q[b, :, h * d:(h + 1) * d], k[b, :, h * d:(h + 1) * d], v[b, :, h * d:(h + 1) * d]
            outs = []
            for i in range(L):
                logits = []
                for j in range(L):
                    lg = s * torch.dot(qh[i], kh[j])
                    if tabs["k"]:
                        for t, bk_ in zip(tabs["k"], buckets(i, j)):
                            T = _param(t)
                            lg = lg + (T[hp, bk_] if spec.mode == "bias" else torch.dot(s * qh[i], T[hp, :, bk_]))
                    if tabs["q"]:
                        for t, bq_ in zip(tabs["q"], buckets(j, i)):
                            T = _param(t)
                            lg = lg + (T[hp, bq_] if spec.mode == "bias" else torch.dot(s * kh[j], T[hp, :, bq_]))
                    if key_padding_mask is not None and key_padding_mask[b, j]:
                        lg = lg * 0 + float("-inf")
                    logits.append(lg)
                a = torch.softmax(torch.stack(logits), 0)
                o = sum(a[j] * vh[j] for j in range(L))
                if tabs["v"]:
                    for j in range(L):
                        for t, bv_ in zip(tabs["v"], buckets(i, j)):
                            o = o + a[j] * _param(t)[hp, bv_, :]
                outs.append(o)
            heads_out.append(torch.stack(outs))
        rows.append(torch.cat(heads_out, dim=-1))
    out = torch.stack(rows)
    return out @ attn.out_proj.weight.T + attn.out_proj.bias


def outputs_and_grads(fn, attn, x, pos, weight):
    """(output, gradients of x, pos and every parameter of ``attn``) of ``fn(x, pos)`` under the
    loss ``(output * weight).sum()``."""
    attn.zero_grad()
    xi, pi = x.clone().requires_grad_(), pos.clone().requires_grad_()
    out = fn(xi, pi)
    (out * weight).sum().backward()
    grads = {"x": xi.grad, "pos": pi.grad}
    grads.update({n: p.grad.clone() for n, p in attn.named_parameters()})
    return out.detach(), grads
