"""BERT encoder, MLM head and sequence classifier.

Parameter names are exactly transformers' ``BertModel`` / ``BertForMaskedLM`` /
``BertForSequenceClassification`` names, so export to HuggingFace is a save, not a rename.
Shape contract (B = batch, T = sequence length, H = hidden size, V = vocab size):

    input_ids, token_type_ids, attention_mask : (B, T) int64 (mask: 1 real, 0 padding)
    BertModel           -> last hidden state (B, T, H), pooled (B, H) or None
    BertForMaskedLM     -> logits (B, T, V), or (M, V) for M selected (masked) positions
    BertForSequenceClassification -> logits (B, num_labels)

Attention uses ``F.scaled_dot_product_attention`` (the fused kernel) whenever no attention
dropout is drawn; in training with attention dropout it runs the same maths (``attention``) with
the fast dropout masks below. Post-LN layers, exact-erf GELU.

Dropout masks are drawn 16 random bits per element (four per 64-bit draw of torch's generator)
instead of one ``bernoulli_`` draw per element: 5x cheaper on CPU, where mask generation was a
quarter of a tiny model's training step. An element is dropped with probability
``round(p * 65536) / 65536`` (0.1000061 for p = 0.1). Masks come from torch's default
generator, so seeding and resume behave as with ``nn.Dropout``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from miniroberta.modeling.config import ModelConfig


def _activation(name: str):
    if name == "gelu":
        return F.gelu
    if name == "gelu_new":
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu
    if name == "silu":
        return F.silu
    raise ValueError(f"unsupported activation {name!r}")


class LayerNorm(nn.Module):
    """LayerNorm with two flavours.

    ``hf``:  ``nn.LayerNorm`` -- (x - mean) / sqrt(var_biased + eps) * weight + bias.
    ``uer``: UER-py's -- weight * (x - mean) / (std_unbiased + eps) + bias (eps 1e-6 on the std).
    Parameter names are ``weight``/``bias`` in both (UER's ``gamma``/``beta``).
    """

    def __init__(self, hidden_size: int, eps: float = 1e-12, kind: str = "hf") -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.bias = nn.Parameter(torch.zeros(hidden_size))
        self.eps = eps
        self.kind = kind
        self.normalized_shape = (hidden_size,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "hf":
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        dtype = x.dtype
        x = x.float()
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True, unbiased=True)
        return (self.weight * (x - mean) / (std + self.eps) + self.bias).to(dtype)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape[0]}, eps={self.eps}, kind={self.kind}"


def dropout_mask(shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype,
                 device: torch.device) -> torch.Tensor:
    """Keep-mask scaled by 1/(1-p): 0 with probability ``round(p * 65536) / 65536``, else 1/(1-p)."""
    n = math.prod(shape)
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-2 ** 63, 2 ** 63 - 1)
    keep = bits.view(torch.int16)[:n].view(shape) >= (round(p * 65536) - 32768)
    return keep.to(dtype).mul_(1.0 / (1.0 - p))


class _ScaledMask(torch.autograd.Function):
    """y = x * mask with the mask saved once (not recomputed) for the backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    if x.is_cuda:  # GPUs have a fused dropout kernel with a cheap counter-based generator
        return F.dropout(x, p, True)
    return _ScaledMask.apply(x, dropout_mask(x.shape, p, x.dtype, x.device))


class Dropout(nn.Dropout):
    """``nn.Dropout`` with the fast masks of :func:`dropout_mask` (same parameters and semantics)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
              dropout_p: float, training: bool) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v over (B, heads, T, head_dim) tensors; ``mask`` (B, 1, 1, T)
    boolean, True = attend. SDPA's fused kernel unless attention dropout is drawn on a CPU."""
    if not training or dropout_p == 0.0 or q.is_cuda:   # CUDA's fused kernels draw their own dropout
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p if training else 0.0)
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(1.0 / math.sqrt(q.shape[-1]))   # (B, nh, T, T)
    if mask is not None:
        scores = scores.masked_fill_(~mask, float("-inf"))
    probs = dropout(torch.softmax(scores, dim=-1), dropout_p, True)
    return torch.matmul(probs, v)


def make_layer_norm(config: ModelConfig) -> LayerNorm:
    return LayerNorm(config.hidden_size, config.layer_norm_eps, config.layer_norm_type)


class BertEmbeddings(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = make_layer_norm(config)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        T = input_ids.shape[1]
        if T > self.position_embeddings.num_embeddings:
            raise ValueError(f"sequence length {T} exceeds max_position_embeddings {self.position_embeddings.num_embeddings}")
        x = self.word_embeddings(input_ids) + self.position_embeddings.weight[:T].unsqueeze(0)
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        H = config.hidden_size
        self.query = nn.Linear(H, H)
        self.key = nn.Linear(H, H)
        self.value = nn.Linear(H, H)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        B, T, H = x.shape
        q = self.query(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.key(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.value(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        y = attention(q, k, v, attn_mask, self.dropout_p, self.training)
        return y.transpose(1, 2).reshape(B, T, H)


class BertSelfOutput(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = make_layer_norm(config)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, attn_mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = _activation(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class BertOutput(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = make_layer_norm(config)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class BertLayer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        a = self.attention(x, attn_mask)
        return self.output(self.intermediate(a), a)


class BertEncoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None,
                output_hidden_states: bool = False) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        states = [x] if output_hidden_states else None
        for layer in self.layer:
            x = layer(x, attn_mask)
            if states is not None:
                states.append(x)
        return x, states


class BertPooler(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


def attention_bias(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, T) 1/0 padding mask -> (B, 1, 1, T) boolean mask for SDPA (True = attend)."""
    if attention_mask is None:
        return None
    return attention_mask.bool()[:, None, None, :]


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor | None = None
    hidden_states: list[torch.Tensor] | None = None


class BertModel(nn.Module):
    def __init__(self, config: ModelConfig, add_pooling_layer: bool = True) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, output_hidden_states: bool = False) -> EncoderOutput:
        x = self.embeddings(input_ids, token_type_ids)
        x, states = self.encoder(x, attention_bias(attention_mask), output_hidden_states)
        pooled = self.pooler(x) if self.pooler is not None else None
        return EncoderOutput(x, pooled, states)


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = _activation(config.hidden_act)
        self.LayerNorm = make_layer_norm(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    """dense -> act -> LayerNorm -> decoder (weight tied to the word embeddings) + own bias."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(x), self.decoder.weight, self.bias)


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictions(x)


@dataclass
class MaskedLMOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor
    hidden_states: list[torch.Tensor] | None = None
    correct: torch.Tensor | None = None
    num_predicted: int | torch.Tensor | None = None


# keys present in our state_dict only because of weight tying (HF omits them in its files)
TIED_KEYS = ("cls.predictions.decoder.weight",)


class BertForMaskedLM(nn.Module):
    def __init__(self, config: ModelConfig, add_pooling_layer: bool = False) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=add_pooling_layer)
        self.cls = BertOnlyMLMHead(config)
        self.tie_weights()

    def tie_weights(self) -> None:
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                masked_positions: torch.Tensor | None = None, output_hidden_states: bool = False) -> MaskedLMOutput:
        """Without ``masked_positions``: logits for every position (B, T, V); ``labels`` (B, T)
        uses -100 for "not predicted".  With ``masked_positions`` (M,) flat indices into B*T
        (what training uses): the head runs on those M positions only, logits are (M, V) and
        ``labels`` (M,) are their original ids."""
        out = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states)
        h = out.last_hidden_state
        if masked_positions is not None:
            h = h.reshape(-1, h.shape[-1]).index_select(0, masked_positions)
        logits = self.cls(h)
        loss = correct = None
        if labels is not None:
            flat_logits = logits.reshape(-1, logits.shape[-1])
            flat_labels = labels.reshape(-1)
            loss = F.cross_entropy(flat_logits.float(), flat_labels, ignore_index=-100)
            with torch.no_grad():
                correct = ((flat_logits.argmax(-1) == flat_labels) & (flat_labels != -100)).sum()
        return MaskedLMOutput(loss, logits, out.hidden_states, correct)


@dataclass
class SequenceClassifierOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor
    hidden_states: list[torch.Tensor] | None = None


class BertForSequenceClassification(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=True)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = Dropout(p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                output_hidden_states: bool = False) -> SequenceClassifierOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states)
        logits = self.classifier(self.dropout(out.pooler_output))
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return SequenceClassifierOutput(loss, logits, out.hidden_states)


@torch.no_grad()
def init_weights(model: nn.Module, initializer_range: float = 0.02, style: str = "hf") -> None:
    """``hf``: N(0, std) weights, zero biases, zero padding row (transformers' init).
    ``uer``: N(0, std) for every parameter except LayerNorm (UER-py's init, biases included)."""
    if style not in ("hf", "uer"):
        raise ValueError(f"init style must be 'hf' or 'uer', got {style!r}")
    embedding_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    for module in model.modules():
        if isinstance(module, nn.Linear) and id(module.weight) in embedding_weights:
            continue  # the MLM decoder tied to the word embeddings: initialised (with its [PAD] row) below
        if isinstance(module, LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()
        elif isinstance(module, nn.Linear):
            module.weight.normal_(0.0, initializer_range)
            if module.bias is not None:
                module.bias.normal_(0.0, initializer_range) if style == "uer" else module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, initializer_range)
            if style == "hf" and module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, BertLMPredictionHead):
            module.bias.normal_(0.0, initializer_range) if style == "uer" else module.bias.zero_()


def build_mlm(config: ModelConfig, init: str = "hf", seed: int | None = None,
              add_pooling_layer: bool = False) -> BertForMaskedLM:
    if seed is not None:
        torch.manual_seed(seed)
    m = BertForMaskedLM(config, add_pooling_layer=add_pooling_layer)
    init_weights(m, config.initializer_range, init)
    return m


def flops_per_token(config: ModelConfig, seq_len: int, mask_rate: float = 0.15) -> float:
    """Training FLOPs per real token (forward + backward = 3x forward matmul FLOPs), counting
    the encoder matmuls, attention scores/values and the MLM head on masked positions only."""
    H, L, I, V = config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size
    per_layer = 2 * (4 * H * H + 2 * H * I) + 2 * 2 * seq_len * H
    head = mask_rate * 2 * (H * H + H * V)
    return 3.0 * (L * per_layer + head)


__all__ = ["LayerNorm", "BertModel", "BertForMaskedLM", "BertForSequenceClassification", "init_weights",
           "build_mlm", "attention_bias", "TIED_KEYS", "flops_per_token", "MaskedLMOutput", "EncoderOutput",
           "SequenceClassifierOutput"]
