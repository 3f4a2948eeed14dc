"""Transformer-VQ in PyTorch, for training (spec §1-3).

The network is the one tvq-serve serves: token embeddings (+ optional
absolute sinusoids), n_layer layers of two gated VQ-attention sublayers each,
an optional final RMS norm and an untied or tied output head. Sequences are
processed in blocks; a `DecodeState` per sublayer carries the window of the
last `mem_len` keys (as codes) and values and the aggregated cache (per-code
counts and mean values) from one block to the next, exactly as in spec §3.

Training pieces (the official recipe's essentials):
- keys are quantized with a straight-through estimator
  (k_hat = c[z] + k - stopgrad(k));
- a commitment loss sum_h |k - c[z]|^2 per token and sublayer;
- the codebook is not trained by gradients: `codebook_ema_update` moves
  c_sum and c_count towards the per-update sums of the keys assigned to each
  code by exponential moving averages (c = c_sum / max(c_count, 0.01));
- the state handed from block to block is detached (truncated gradients).

Works in float32 (training) and float64 (parity tests): every computation
follows the dtype of the parameters.
"""

import math

import torch
import torch.nn.functional as F

RMS_EPS = 1e-6
MASKED = float("-inf")


def sinusoids(positions, width, pe_lam, dtype):
    """Rows [sin(p w_0..w_{D/2-1}) | cos(...)] with w_i = pe_lam^(-2i/D).

    Computed in float64 and cast, so float32 and float64 models see the
    same table up to rounding.
    """
    positions = torch.as_tensor(positions, dtype=torch.float64)
    exponents = torch.arange(0, width, 2, dtype=torch.float64) / width
    angles = positions[:, None] * (1.0 / (float(pe_lam) ** exponents))[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1).to(dtype)


def rotation_gradient(k, c_z, eps=1e-6):
    """Zero in value; its gradient carries the rotation trick (Fifty et al.
    2024, "Restructuring vector quantization with the rotation trick").

    The quantized key is written as c_z = s R k with R the rotation taking
    k/|k| to c_z/|c_z| (in the plane of the two) and s = |c_z|/|k|, R and s
    treated as constants: the gradient reaching k is s R^T g instead of the
    straight-through g, so it keeps the angle between the key's gradient
    and the key. Householder form, for unit e = k/|k|, q = c_z/|c_z| and
    r = (e + q)/|e + q|:  R x = x - 2 r (r.x) + 2 q (e.x).
    """
    with torch.no_grad():
        k_norm = k.norm(dim=-1, keepdim=True).clamp(min=eps)
        c_norm = c_z.norm(dim=-1, keepdim=True).clamp(min=eps)
        e, q = k / k_norm, c_z / c_norm
        r = e + q
        r = r / r.norm(dim=-1, keepdim=True).clamp(min=eps)
        scale = c_norm / k_norm
    rotated = scale * (k - 2.0 * r * (r * k).sum(-1, keepdim=True)
                       + 2.0 * q * (e * k).sum(-1, keepdim=True))
    return rotated - rotated.detach()


def rms_norm(x):
    """x / sqrt(eps + mean(x^2)) over the last axis (eps inside the root)."""
    return x * torch.rsqrt(RMS_EPS + torch.mean(x * x, dim=-1, keepdim=True))


class DecodeState:
    """Per-sublayer, per-sequence state between blocks (spec §3).

    The window is kept in position order: slot j of `win_z`/`win_v` holds the
    key at position `pos - mem_len + j`; an empty slot has code -1.
    """

    def __init__(self, pos, win_z, win_v, count, mean):
        self.pos = pos          # int: tokens absorbed so far
        self.win_z = win_z      # [B, H, M] long
        self.win_v = win_v      # [B, H, M, d_v]
        self.count = count      # [B, H, S]
        self.mean = mean        # [B, H, S, d_v]

    @staticmethod
    def initial(batch, n_head, mem_len, n_code, d_v, dtype, device=None):
        return DecodeState(
            pos=0,
            win_z=torch.full((batch, n_head, mem_len), -1, dtype=torch.long,
                             device=device),
            win_v=torch.zeros(batch, n_head, mem_len, d_v, dtype=dtype,
                              device=device),
            count=torch.zeros(batch, n_head, n_code, dtype=dtype, device=device),
            mean=torch.zeros(batch, n_head, n_code, d_v, dtype=dtype,
                             device=device))

    def detached(self):
        return DecodeState(self.pos, self.win_z, self.win_v.detach(),
                           self.count.detach(), self.mean.detach())


class VQAttention(torch.nn.Module):
    """One attention sublayer A(x) with its own codebook (spec §2)."""

    def __init__(self, config):
        super().__init__()
        d_model, d_k, d_v = config["d_model"], config["d_k"], config["d_v"]
        n_head, n_code = config["n_head"], config["n_code"]
        self.d_k, self.d_v, self.n_head, self.n_code = d_k, d_v, n_head, n_code
        self.mem_len = config["mem_len"]
        self.agg_cache = config["agg_cache"]
        self.pe_lam = config["pe_lam"]
        self.d_model = d_model
        self.tau = d_k ** -0.25
        # Gradient estimator through the quantizer (training only; the
        # forward value is c_z either way): "ste" or "rotation".
        self.vq_grad = "ste"
        self.input_ln_g = torch.nn.Parameter(torch.ones(d_model))
        self.input_ln_b = torch.nn.Parameter(torch.zeros(d_model))
        self.q_proj = torch.nn.Parameter(torch.empty(d_model, n_head * d_k))
        self.kvg_proj = torch.nn.Parameter(
            torch.empty(d_model, n_head * (d_k + 2 * d_v)))
        self.r_proj = torch.nn.Parameter(torch.empty(d_model, n_head * d_k))
        self.res_proj = torch.nn.Parameter(torch.empty(n_head * d_v, d_model))
        self.u = torch.nn.Parameter(torch.zeros(n_head * d_k))
        self.v = torch.nn.Parameter(torch.zeros(n_head * d_k))
        # The codebook is updated by EMA, not by the optimizer: buffers.
        self.register_buffer("c_sum", torch.empty(n_head, n_code, d_k))
        self.register_buffer("c_count", torch.ones(n_head, n_code))
        self.reset_parameters()

    def reset_parameters(self):
        # Initialisation of the official code: fan-in scaled normals for the
        # projections and the codebook sums, zeros for u, v and LN biases.
        for weight in (self.q_proj, self.kvg_proj, self.r_proj, self.res_proj):
            torch.nn.init.normal_(weight, std=weight.shape[0] ** -0.5)
        torch.nn.init.normal_(self.c_sum, std=(self.n_head * self.n_code) ** -0.5)
        torch.nn.init.ones_(self.c_count)

    def codebook(self):
        """c = c_sum / max(c_count, 0.01), [H, S, d_k], no gradient."""
        return (self.c_sum / self.c_count.clamp(min=0.01)[..., None]).detach()

    def relative_table(self):
        """r_d = (Sin(d) Wr) d_k^-1/4 for d = 0..M, as [H, M+1, d_k]."""
        dtype = self.q_proj.dtype
        table = sinusoids(torch.arange(self.mem_len + 1), self.d_model,
                          self.pe_lam, dtype) @ self.r_proj
        table = table.view(self.mem_len + 1, self.n_head, self.d_k)
        return table.transpose(0, 1) * self.tau

    def forward(self, x, state, dropout_res=0.0):
        """x: [B, T, D] block; returns (residual, new_state, aux dict).

        aux has `codes` [B, H, T], `commit` (mean over tokens of
        sum_h |k - c_z|^2) and `keys` [B, H, T, d_k] (detached, for the
        codebook EMA).
        """
        batch, length, _ = x.shape
        n_head, d_k, d_v, mem_len = self.n_head, self.d_k, self.d_v, self.mem_len
        x_tilde = rms_norm(x) * self.input_ln_g + self.input_ln_b

        q = (x_tilde @ self.q_proj).view(batch, length, n_head, d_k)
        q = (rms_norm(q) * self.tau).transpose(1, 2)               # B H T dk
        kvg = x_tilde @ self.kvg_proj
        k, v, gate = torch.split(
            kvg, [n_head * d_k, n_head * d_v, n_head * d_v], dim=-1)
        k = (rms_norm(k.view(batch, length, n_head, d_k)) * self.tau).transpose(1, 2)
        v = F.silu(v).view(batch, length, n_head, d_v).transpose(1, 2)  # B H T dv
        gate = F.silu(gate)                                         # B T H*dv

        # Vector quantization: nearest codeword (lowest index on ties).
        c = self.codebook()                                         # H S dk
        with torch.no_grad():
            dist = ((k * k).sum(-1, keepdim=True)
                    - 2.0 * torch.einsum("bhtk,hsk->bhts", k, c)
                    + (c * c).sum(-1)[None, :, None, :])
            z = torch.argmin(dist, dim=-1)                          # B H T
        head_index = torch.arange(n_head)[None, :, None]
        c_z = c[head_index, z]                                      # B H T dk
        commit = ((k - c_z) ** 2).sum(-1).sum(1).mean()
        if self.vq_grad == "rotation":
            k_hat = c_z + rotation_gradient(k, c_z)
        else:
            k_hat = c_z + (k - k.detach())                          # straight-through

        # Keys in view: the window (positions pos-M..pos-1) then the block.
        win_valid = state.win_z >= 0                                # B H M
        win_k = c[head_index, state.win_z.clamp(min=0)]             # B H M dk
        keys = torch.cat([win_k, k_hat], dim=2)                     # B H W dk
        values = torch.cat([state.win_v, v], dim=2)                 # B H W dv
        valid = torch.cat(
            [win_valid, torch.ones(batch, n_head, length, dtype=torch.bool)],
            dim=2)                                                  # B H W

        u = self.u.view(1, n_head, 1, d_k) * self.tau
        v_bias = self.v.view(1, n_head, 1, d_k) * self.tau
        q_u, q_v = q + u, q + v_bias
        scores = q_u @ keys.transpose(-1, -2)                       # B H T W

        # Distance of query i to key j: d = i + M - j.
        query_pos = torch.arange(length)[:, None]
        key_pos = torch.arange(mem_len + length)[None, :]
        distance = query_pos + mem_len - key_pos                    # T W
        in_window = (distance >= 0) & (distance <= mem_len)
        rel = q_v @ self.relative_table().unsqueeze(0).transpose(-1, -2)  # B H T M+1
        rel = torch.gather(
            rel, -1, distance.clamp(0, mem_len).expand(batch, n_head, -1, -1))
        scores = scores + rel * in_window
        attend = valid[:, :, None, :] & (distance >= 0)
        if not self.agg_cache:
            attend = attend & (distance <= mem_len)
        scores = scores.masked_fill(~attend, MASKED)

        if self.agg_cache:
            cache_scores = q_u @ c.unsqueeze(0).transpose(-1, -2)  # B H T S
            log_count = torch.where(
                state.count > 0, torch.log(state.count.clamp(min=1.0)),
                torch.full_like(state.count, MASKED))
            cache_scores = cache_scores + log_count[:, :, None, :]
            weights = torch.softmax(torch.cat([scores, cache_scores], -1), -1)
            recent_w, cache_w = torch.split(
                weights, [mem_len + length, self.n_code], dim=-1)
            out = recent_w @ values + cache_w @ state.mean
        else:
            out = torch.softmax(scores, -1) @ values                # B H T dv

        out = out.transpose(1, 2).reshape(batch, length, n_head * d_v)
        res = (out * gate) @ self.res_proj
        if dropout_res > 0.0 and self.training:
            res = F.dropout(res, p=dropout_res)
        new_state = self.advance(state, z, v.detach())
        return res, new_state, {"codes": z, "commit": commit, "keys": k.detach()}

    def advance(self, state, z, v):
        """State after the block: keys leaving the window join count/mean."""
        length = z.shape[-1]
        recent_z = torch.cat([state.win_z, z], dim=2)
        recent_v = torch.cat([state.win_v, v], dim=2)
        leaving_z, leaving_v = recent_z[:, :, :length], recent_v[:, :, :length]
        onehot = F.one_hot(leaving_z.clamp(min=0), self.n_code).to(v.dtype)
        onehot = onehot * (leaving_z >= 0)[..., None].to(v.dtype)   # B H T S
        count = state.count + onehot.sum(2)
        total = state.mean * state.count[..., None] + onehot.transpose(-1, -2) @ leaving_v
        mean = total / count.clamp(min=1.0)[..., None]
        return DecodeState(state.pos + length, recent_z[:, :, length:],
                           recent_v[:, :, length:], count, mean)


class TransformerVQ(torch.nn.Module):
    """The whole network; `forward` runs a token block sequence with state."""

    def __init__(self, config):
        super().__init__()
        self.config = dict(config)
        d_model, n_vocab = config["d_model"], config["n_vocab"]
        self.embs = torch.nn.Parameter(torch.empty(n_vocab, d_model))
        self.bias_out = torch.nn.Parameter(torch.zeros(n_vocab))
        self.pos_scale = (torch.nn.Parameter(torch.zeros(()))
                          if config["pe_abs"] else None)
        self.sublayers = torch.nn.ModuleList(
            VQAttention(config) for _ in range(2 * config["n_layer"]))
        if config["e_preln"]:
            self.out_ln_g = torch.nn.Parameter(torch.ones(d_model))
            self.out_ln_b = torch.nn.Parameter(torch.zeros(d_model))
        if not config["e_tie"]:
            self.out_proj = torch.nn.Parameter(torch.empty(d_model, n_vocab))
            self.out_bias = torch.nn.Parameter(torch.zeros(n_vocab))
        torch.nn.init.normal_(self.embs, std=1.0)
        if not config["e_tie"]:
            torch.nn.init.normal_(self.out_proj, std=d_model ** -0.5)

    def set_vq_grad(self, mode):
        """Chooses the quantizer's gradient estimator: "ste" or "rotation"."""
        if mode not in ("ste", "rotation"):
            raise ValueError("vq_grad must be ste or rotation, not %r" % (mode,))
        for layer in self.sublayers:
            layer.vq_grad = mode

    # ----------------------------------------------------------- parameters

    def named_tensors(self):
        """{spec §4 name: tensor} of every parameter and codebook buffer."""
        tensors = {"token_embedder/embs": self.embs,
                   "token_embedder/bias_out": self.bias_out}
        if self.pos_scale is not None:
            tensors["position_embedder/scale"] = self.pos_scale
        if self.config["e_preln"]:
            tensors["out_ln/g"] = self.out_ln_g
            tensors["out_ln/b"] = self.out_ln_b
        if not self.config["e_tie"]:
            tensors["out_proj/kernel"] = self.out_proj
            tensors["out_proj/bias"] = self.out_bias
        for index, layer in enumerate(self.sublayers):
            prefix = "transformer_layers_%d/scanned_attn%d/" % (index // 2,
                                                               index % 2 + 1)
            tensors[prefix + "input_ln/g"] = layer.input_ln_g
            tensors[prefix + "input_ln/b"] = layer.input_ln_b
            tensors[prefix + "q_proj/kernel"] = layer.q_proj
            tensors[prefix + "kvg_proj/kernel"] = layer.kvg_proj
            tensors[prefix + "r_proj/kernel"] = layer.r_proj
            tensors[prefix + "res_proj/kernel"] = layer.res_proj
            tensors[prefix + "u"] = layer.u
            tensors[prefix + "v"] = layer.v
            tensors[prefix + "quantizer/c_sum"] = layer.c_sum
            tensors[prefix + "quantizer/c_count"] = layer.c_count
        return tensors

    def load_named_tensors(self, arrays):
        """Copies {name: numpy array} (spec §4 names) into the model."""
        own = self.named_tensors()
        missing = sorted(set(own) - set(arrays))
        extra = sorted(set(arrays) - set(own))
        if missing or extra:
            raise ValueError("tensor names differ: missing %s, unexpected %s" %
                             (missing, extra))
        with torch.no_grad():
            for name, tensor in own.items():
                value = torch.as_tensor(arrays[name])
                if tuple(value.shape) != tuple(tensor.shape):
                    raise ValueError("%s: shape %s, expected %s" %
                                     (name, tuple(value.shape), tuple(tensor.shape)))
                tensor.copy_(value.to(tensor.dtype))

    # -------------------------------------------------------------- forward

    def initial_state(self, batch):
        config = self.config
        return [DecodeState.initial(batch, config["n_head"], config["mem_len"],
                                    config["n_code"], config["d_v"],
                                    self.embs.dtype)
                for _ in self.sublayers]

    def forward_block(self, tokens, states, dropout_res=0.0):
        """One block: tokens [B, T] -> (logprobs [B, T, V], new states, aux)."""
        config = self.config
        x = self.embs[tokens]
        if self.pos_scale is not None:
            positions = torch.arange(states[0].pos, states[0].pos + tokens.shape[1])
            x = x + self.pos_scale * sinusoids(positions, config["d_model"],
                                               config["pe_lam"], x.dtype)
        new_states, codes, keys, commit = [], [], [], 0.0
        for layer, state in zip(self.sublayers, states):
            res, new_state, aux = layer(x, state, dropout_res)
            x = x + res
            new_states.append(new_state)
            codes.append(aux["codes"])
            keys.append(aux["keys"])
            commit = commit + aux["commit"]
        if config["e_preln"]:
            x = rms_norm(x) * self.out_ln_g + self.out_ln_b
        if config["e_tie"]:
            logits = x @ self.embs.transpose(0, 1) + self.bias_out
        else:
            logits = x @ self.out_proj + self.out_bias
        logprobs = torch.log_softmax(logits * config["e_scale"], dim=-1)
        return logprobs, new_states, {"codes": codes, "keys": keys,
                                      "commit": commit}

    def forward(self, tokens, states=None, block_len=None, detach_state=True,
                dropout_res=0.0):
        """Runs tokens [B, T] block by block (the last block may be short).

        Returns (logprobs [B, T, V], final states, aux) where aux holds
        `codes` [2*n_layer, B, H, T], `commit` (mean over blocks) and
        `keys` (per sublayer, [B, H, T, d_k]) for the codebook EMA.
        With detach_state the state passed between blocks carries no
        gradient (truncated back-propagation, as in the official trainer).
        """
        if states is None:
            states = self.initial_state(tokens.shape[0])
        block_len = block_len or self.config["block_len"]
        outputs, codes, keys, commits = [], [], [], []
        for start in range(0, tokens.shape[1], block_len):
            block = tokens[:, start:start + block_len]
            logprobs, states, aux = self.forward_block(block, states, dropout_res)
            if detach_state:
                states = [state.detached() for state in states]
            outputs.append(logprobs)
            codes.append(torch.stack(aux["codes"]))
            keys.append(aux["keys"])
            commits.append(aux["commit"])
        keys = [torch.cat([block_keys[i] for block_keys in keys], dim=2)
                for i in range(len(self.sublayers))]
        return (torch.cat(outputs, dim=1), states,
                {"codes": torch.cat(codes, dim=-1), "keys": keys,
                 "commit": sum(commits) / len(commits)})

    # ------------------------------------------------------------ codebook

    @torch.no_grad()
    def codebook_ema_update(self, keys, codes, gamma, weights=None):
        """c_sum <- g c_sum + (1-g) sum_{t: z_t=s} k_t; c_count likewise.

        keys: per sublayer [B, H, T, d_k]; codes: [n_sub, B, H, T];
        weights: optional [B, T] mask (0 for padding).
        """
        for index, layer in enumerate(self.sublayers):
            k = keys[index]
            onehot = F.one_hot(codes[index], layer.n_code).to(k.dtype)  # B H T S
            if weights is not None:
                onehot = onehot * weights[:, None, :, None].to(k.dtype)
            sum_hat = torch.einsum("bhts,bhtk->hsk", onehot, k)
            count_hat = onehot.sum(dim=(0, 2))
            layer.c_sum.mul_(gamma).add_((1.0 - gamma) * sum_hat)
            layer.c_count.mul_(gamma).add_((1.0 - gamma) * count_hat)


def parameter_count(model):
    return sum(t.numel() for t in model.named_tensors().values())


def bits(nats):
    return nats / math.log(2.0)
