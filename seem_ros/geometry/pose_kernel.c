/* estimate_pose (seem_ros/geometry/pose.py) in one call: the same steps, the same order, in C.
 *
 * Why: the numpy version is ~70 array operations on a few thousand pixels, so its cost is call
 * overhead (1.8-2.7 ms an object right after the model, in the node), not arithmetic (~0.1 ms
 * here). pose.py loads this library with ctypes when it was built (pip install / colcon) and
 * falls back to numpy otherwise; test_geometry checks that both give the same poses.
 *
 * No Python API: plain C99 on raw buffers, so one file serves setuptools and CMake alike. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define DEPTH_U16 0
#define DEPTH_F32 1
#define DEPTH_F64 2

/* ------------------------------------------------------------------ selection and quantiles */
static void swap_d(double *a, long i, long j) { double t = a[i]; a[i] = a[j]; a[j] = t; }

/* a[k] after partial ordering: a[0..k-1] <= a[k] <= a[k+1..n-1] (quickselect, median of 3). */
static double select_k(double *a, long n, long k) {
    long lo = 0, hi = n - 1;
    while (hi > lo) {
        long mid = lo + (hi - lo) / 2;
        if (a[mid] < a[lo]) swap_d(a, mid, lo);
        if (a[hi] < a[lo]) swap_d(a, hi, lo);
        if (a[hi] < a[mid]) swap_d(a, hi, mid);
        double p = a[mid];
        long i = lo, j = hi;
        while (i <= j) {
            while (a[i] < p) i++;
            while (a[j] > p) j--;
            if (i <= j) { swap_d(a, i, j); i++; j--; }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return a[k];
    }
    return a[k];
}

/* np.quantile(x, q) with linear interpolation (pose.py's _quantiles); scratch holds n doubles. */
static double quantile(const double *x, long n, double q, double *scratch) {
    double pos = q * (double)(n - 1);
    long lo = (long)floor(pos);
    long hi = lo + 1 < n - 1 ? lo + 1 : n - 1;
    memcpy(scratch, x, (size_t)n * sizeof(double));
    double a = select_k(scratch, n, lo), b = a;
    if (hi != lo) {                       /* the next order statistic: the least of the rest */
        b = scratch[lo + 1];
        for (long i = lo + 2; i < n; i++) if (scratch[i] < b) b = scratch[i];
    }
    return a + (b - a) * (pos - (double)lo);
}

/* ------------------------------------------------------------------ small vector helpers */
static double dot3(const double *a, const double *b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }
static void cross3(const double *a, const double *b, double *o) {
    o[0] = a[1] * b[2] - a[2] * b[1];
    o[1] = a[2] * b[0] - a[0] * b[2];
    o[2] = a[0] * b[1] - a[1] * b[0];
}

/* out[k] = dir . (X0[k], X1[k], X2[k]): the points along a direction. */
static void project(const double *X0, const double *X1, const double *X2, long n, const double *dir, double *out) {
    for (long k = 0; k < n; k++) out[k] = dir[0] * X0[k] + dir[1] * X1[k] + dir[2] * X2[k];
}

/* The points' 0.5 % and 99.5 % quantiles along a direction (their extent, robustly). */
static void extent(const double *X0, const double *X1, const double *X2, long n, const double *dir,
                   double *tmp, double *scr, double *lo, double *hi) {
    project(X0, X1, X2, n, dir, tmp);
    *lo = quantile(tmp, n, 0.005, scr);
    *hi = quantile(tmp, n, 0.995, scr);
}

/* Eigen-decomposition of a symmetric 3x3 matrix (cyclic Jacobi): w ascending, V's columns the
 * vectors (row-major V[3*i + k] = component i of vector k). */
static void eigh3(const double *A, double *w, double *V) {
    double a[9];
    memcpy(a, A, sizeof a);
    for (int i = 0; i < 9; i++) V[i] = (i % 4 == 0) ? 1.0 : 0.0;
    for (int sweep = 0; sweep < 50; sweep++) {
        double off = fabs(a[1]) + fabs(a[2]) + fabs(a[5]);
        double scale = fabs(a[0]) + fabs(a[4]) + fabs(a[8]);
        if (off <= 1e-300 || off <= 1e-18 * scale) break;
        for (int p = 0; p < 2; p++) {
            for (int q = p + 1; q < 3; q++) {
                double apq = a[3 * p + q];
                if (apq == 0.0) continue;
                double app = a[3 * p + p], aqq = a[3 * q + q];
                double theta = (aqq - app) / (2.0 * apq);
                double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
                double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
                for (int k = 0; k < 3; k++) {          /* A <- J^T A J */
                    double akp = a[3 * k + p], akq = a[3 * k + q];
                    a[3 * k + p] = c * akp - s * akq;
                    a[3 * k + q] = s * akp + c * akq;
                }
                for (int k = 0; k < 3; k++) {
                    double apk = a[3 * p + k], aqk = a[3 * q + k];
                    a[3 * p + k] = c * apk - s * aqk;
                    a[3 * q + k] = s * apk + c * aqk;
                }
                for (int k = 0; k < 3; k++) {
                    double vkp = V[3 * k + p], vkq = V[3 * k + q];
                    V[3 * k + p] = c * vkp - s * vkq;
                    V[3 * k + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    int idx[3] = {0, 1, 2};
    double d[3] = {a[0], a[4], a[8]};
    for (int i = 0; i < 2; i++)                    /* ascending */
        for (int j = i + 1; j < 3; j++)
            if (d[idx[j]] < d[idx[i]]) { int t = idx[i]; idx[i] = idx[j]; idx[j] = t; }
    double Vs[9];
    for (int k = 0; k < 3; k++) {
        w[k] = d[idx[k]];
        for (int i = 0; i < 3; i++) Vs[3 * i + k] = V[3 * i + idx[k]];
    }
    memcpy(V, Vs, sizeof Vs);
}

/* ------------------------------------------------------------------ union-find (surfaces) */
static int32_t find_root(int32_t *par, int32_t i) {
    while (par[i] != i) { par[i] = par[par[i]]; i = par[i]; }
    return i;
}
static void unite(int32_t *par, int32_t a, int32_t b) {
    a = find_root(par, a); b = find_root(par, b);
    if (a == b) return;
    if (a < b) par[b] = a; else par[a] = b;     /* the root is the component's first pixel */
}

/* ------------------------------------------------------------------ the pose
 * depth: the raw image; mask: [H, W] bool. ip (integers): kind (DEPTH_*), depth strides (2, in
 * bytes), lazy (1: a DepthImage, metres = float32(raw) * float32(scale), invalid unless
 * min_range < m <= max_range; 0: metres as they are, valid > 0), mask strides (2), box x0, y0,
 * x1, y1 (max exclusive), n_mask (the mask's pixels in the box), grid stride s, erosion radius
 * rg0 (grid cells; tried down to 1), min_points, has_support. dp (doubles): K (9, row-major),
 * up (3), support normal (3) and offset, snap, scale, min_range, max_range, surface_jump.
 * out: position 3, R 9 (row-major, columns = axes), size 3, centroid 3, valid points 1, rim
 * cells 1, quaternion 4 (x, y, z, w; w >= 0). Returns the inlier count, 0 for "no pose"
 * (pose.py then returns None), -1 when out of memory. */
static void quat_from_R(const double *m, double *q);

int seem_pose(const void *depth, const uint8_t *mask, const int64_t *ip, const double *dp, double *out) {
    const int kind = (int)ip[0], lazy = (int)ip[3];
    const long dstride0 = ip[1], dstride1 = ip[2], mstride0 = ip[4], mstride1 = ip[5];
    const int x0 = (int)ip[6], y0 = (int)ip[7], x1 = (int)ip[8], y1 = (int)ip[9];
    const long n_mask = ip[10];
    const int s = (int)ip[11], rg0 = (int)ip[12], min_points = (int)ip[13], has_support = (int)ip[14];
    const double *K = dp, *up_in = dp + 9, *normal = dp + 12;
    const double offset = dp[15], snap = dp[16], scale = dp[17], min_range = dp[18], max_range = dp[19];
    const double surface_jump = dp[20];
    const int gh = (y1 - y0 + s - 1) / s, gw = (x1 - x0 + s - 1) / s;
    const long G = (long)gh * gw;
    int rc = 0;
    uint8_t *m = malloc((size_t)G), *e = malloc((size_t)G), *sel = malloc((size_t)G);
    double *z = malloc((size_t)G * sizeof(double));
    int32_t *par = malloc((size_t)G * sizeof(int32_t));
    double *X = NULL, *d = NULL, *tmp = NULL, *scr = NULL;
    if (!m || !e || !sel || !z || !par) { rc = -1; goto done; }

    long n_m = 0;                                   /* the mask on the grid */
    for (int i = 0; i < gh; i++)
        for (int j = 0; j < gw; j++) {
            uint8_t v = mask[(long)(y0 + i * s) * mstride0 + (long)(x0 + j * s) * mstride1] != 0;
            m[(long)i * gw + j] = v;
            n_m += v;
        }
    /* the rim: the largest disc erosion (rg0 .. 1) that keeps enough of the mask. A pixel stays
     * when, on each row dy of the disc, the mask runs at least w(dy) cells left and right of it
     * (run lengths counted once: 2 rg + 1 tests a pixel instead of ~3 rg^2). */
    int rim = 0;
    double keep_min = 0.3 * (double)n_m;
    if (keep_min < min_points) keep_min = min_points;
    if (rg0 > 0) {
        int32_t *left = malloc((size_t)G * sizeof(int32_t)), *right = malloc((size_t)G * sizeof(int32_t));
        int *half = malloc((size_t)(2 * rg0 + 1) * sizeof(int));
        if (!left || !right || !half) { free(left); free(right); free(half); rc = -1; goto done; }
        for (int i = 0; i < gh; i++) {
            long row = (long)i * gw;
            for (int j = 0; j < gw; j++) left[row + j] = m[row + j] ? (j ? left[row + j - 1] : 0) + 1 : 0;
            for (int j = gw - 1; j >= 0; j--) right[row + j] = m[row + j] ? (j < gw - 1 ? right[row + j + 1] : 0) + 1 : 0;
        }
        for (int rg = rg0; rg > 0; rg--) {
            for (int dy = -rg; dy <= rg; dy++) {       /* the disc's half-width on row dy */
                int w = 0;
                while ((w + 1) * (w + 1) + dy * dy <= rg * rg) w++;
                half[dy + rg] = w;
            }
            long n_e = 0;
            for (int i = 0; i < gh; i++)
                for (int j = 0; j < gw; j++) {
                    long k = (long)i * gw + j;
                    uint8_t v = m[k];
                    for (int dy = -rg; v && dy <= rg; dy++) {
                        int ii = i + dy;             /* outside the grid is not the mask */
                        if (ii < 0 || ii >= gh) { v = 0; break; }
                        long kk = (long)ii * gw + j;
                        if (left[kk] <= half[dy + rg] || right[kk] <= half[dy + rg]) v = 0;
                    }
                    e[k] = v;
                    n_e += v;
                }
            if ((double)n_e >= keep_min) { memcpy(m, e, (size_t)G); n_m = n_e; rim = rg; break; }
        }
        free(left); free(right); free(half);
    }
    /* depth in metres on the grid; inf where not the mask's or no reading */
    const float fscale = (float)scale, fmin = (float)min_range, fmax = (float)max_range;
    for (int i = 0; i < gh; i++)
        for (int j = 0; j < gw; j++) {
            long k = (long)i * gw + j;
            double zz = INFINITY;
            if (m[k]) {
                const char *p = (const char *)depth + (long)(y0 + i * s) * dstride0 + (long)(x0 + j * s) * dstride1;
                if (lazy) {
                    float f;
                    if (kind == DEPTH_U16) f = (float)*(const uint16_t *)p;
                    else if (kind == DEPTH_F32) f = *(const float *)p;
                    else f = (float)*(const double *)p;
                    if (fscale != 1.0f) f = f * fscale;
                    if (isfinite(f) && !(f <= fmin) && !(f > fmax) && f > 0) zz = (double)f;
                } else {
                    double f = kind == DEPTH_F32 ? (double)*(const float *)p : *(const double *)p;
                    if (f > 0) zz = f;              /* NaN > 0 is false */
                }
            }
            z[k] = zz;
        }
    /* jumps behind a neighbour, then the largest surface */
    for (int i = 0; i < gh; i++)
        for (int j = 0; j < gw; j++) {
            long k = (long)i * gw + j;
            double zz = z[k];
            if (!isfinite(zz)) { sel[k] = 0; continue; }
            double nmin = INFINITY;
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++) {
                    int ii = i + dy, jj = j + dx;
                    if ((dy || dx) && ii >= 0 && ii < gh && jj >= 0 && jj < gw && z[(long)ii * gw + jj] < nmin)
                        nmin = z[(long)ii * gw + jj];
                }
            sel[k] = !(zz - nmin > 0.01 + 0.03 * zz);
        }
    if (surface_jump > 0) {
        for (long k = 0; k < G; k++) par[k] = (int32_t)k;
        for (int i = 0; i < gh; i++)
            for (int j = 0; j < gw; j++) {
                long k = (long)i * gw + j;
                if (!sel[k]) continue;
                if (j + 1 < gw && sel[k + 1] && fabs(z[k] - z[k + 1]) < surface_jump) unite(par, (int32_t)k, (int32_t)(k + 1));
                if (i + 1 < gh && sel[k + gw] && fabs(z[k] - z[k + gw]) < surface_jump) unite(par, (int32_t)k, (int32_t)(k + gw));
            }
        long n_comp = 0, best_n = 0;
        int32_t best = -1;
        int32_t *count = calloc((size_t)G, sizeof(int32_t));
        if (!count) { rc = -1; goto done; }
        for (long k = 0; k < G; k++) if (sel[k]) { int32_t r = find_root(par, (int32_t)k); if (count[r]++ == 0) n_comp++; }
        if (n_comp > 1) {
            for (long k = 0; k < G; k++)            /* roots are first pixels: raster order breaks ties */
                if (sel[k] && par[k] == k && count[k] > best_n) { best_n = count[k]; best = (int32_t)k; }
            for (long k = 0; k < G; k++) if (sel[k] && find_root(par, (int32_t)k) != best) sel[k] = 0;
        }
        free(count);
    }
    long n = 0;
    for (long k = 0; k < G; k++) n += sel[k];
    if (n < min_points) goto done;

    /* points, optical frame; the camera of the grid: principal point shifted, focal lengths / s */
    const double fx = K[0] / s, skew = K[1] / s, cx = (K[2] - x0) / s, fy = K[4] / s, cy = (K[5] - y0) / s;
    X = malloc((size_t)(3 * n) * sizeof(double));
    d = malloc((size_t)n * sizeof(double));
    tmp = malloc((size_t)n * sizeof(double));
    scr = malloc((size_t)n * sizeof(double));
    if (!X || !d || !tmp || !scr) { rc = -1; goto done; }
    double *X0 = X, *X1 = X + n, *X2 = X + 2 * n;
    long c = 0;
    for (int i = 0; i < gh; i++)
        for (int j = 0; j < gw; j++) {
            long k = (long)i * gw + j;
            if (!sel[k]) continue;
            double zz = z[k];
            X2[c] = zz;
            X1[c] = ((double)i - cy) * zz / fy;
            X0[c] = ((double)j - cx - skew * ((double)i - cy) / fy) * zz / fx;
            c++;
        }
    const double n_valid = n_mask * (double)n / (double)(n_m > 0 ? n_m : 1);   /* full-resolution pixels */

    /* along the viewing ray through the robust centroid: MAD rejection */
    double med[3];
    for (int a = 0; a < 3; a++) med[a] = quantile(X + a * n, n, 0.5, scr);
    double rn = sqrt(dot3(med, med)), r[3] = {med[0] / rn, med[1] / rn, med[2] / rn};
    project(X0, X1, X2, n, r, d);
    double md = quantile(d, n, 0.5, scr);
    for (long k = 0; k < n; k++) tmp[k] = fabs(d[k] - md);
    double mad = 1.4826 * quantile(tmp, n, 0.5, scr);
    double lim = 3 * mad + 0.01;
    long nk = 0;
    for (long k = 0; k < n; k++)
        if (tmp[k] <= lim) { X0[nk] = X0[k]; X1[nk] = X1[k]; X2[nk] = X2[k]; d[nk] = d[k]; nk++; }
    if (nk < min_points) goto done;
    /* rows of X are now X0[0..nk), X1[0..nk), X2[0..nk) */
    double centroid[3] = {quantile(X0, nk, 0.5, scr), quantile(X1, nk, 0.5, scr), quantile(X2, nk, 0.5, scr)};

    double front = quantile(d, nk, 0.01, scr);
    double rim_m = rim * front / (0.5 * (fx + fy));
    double up[3] = {up_in[0], up_in[1], up_in[2]}, position[3];
    int placed = 0;
    if (has_support) {
        up[0] = normal[0]; up[1] = normal[1]; up[2] = normal[2];
        double ru = dot3(r, up), fw[3] = {r[0] - ru * up[0], r[1] - ru * up[1], r[2] - ru * up[2]};
        double ff = dot3(fw, fw);
        if (ff > 1e-6) {
            double fn = sqrt(ff), side[3];
            for (int a = 0; a < 3; a++) fw[a] /= fn;
            cross3(up, fw, side);
            double s_lo, s_hi, h_lo, h_hi;
            extent(X0, X1, X2, nk, side, tmp, scr, &s_lo, &s_hi);
            extent(X0, X1, X2, nk, up, tmp, scr, &h_lo, &h_hi);
            project(X0, X1, X2, nk, fw, tmp);
            double f_front = quantile(tmp, nk, 0.01, scr);
            double floor_h = -offset;
            double bottom = h_lo - floor_h < snap ? floor_h : h_lo - rim_m;
            for (int a = 0; a < 3; a++)
                position[a] = (s_lo + s_hi) / 2 * side[a] + (f_front + (s_hi - s_lo) / 2 + rim_m) * fw[a]
                              + (bottom + h_hi + rim_m) / 2 * up[a];
            placed = 1;
        }
    }
    if (!placed) {                                  /* lateral midpoint + as deep as wide */
        double ax[3] = {0, 0, 0}, e1[3], e2[3];
        if (fabs(r[0]) < 0.9) ax[0] = 1.0; else ax[1] = 1.0;
        cross3(r, ax, e1);
        double en = sqrt(dot3(e1, e1));
        for (int a = 0; a < 3; a++) e1[a] /= en;
        cross3(r, e1, e2);
        double a_lo, a_hi, b_lo, b_hi;
        extent(X0, X1, X2, nk, e1, tmp, scr, &a_lo, &a_hi);
        extent(X0, X1, X2, nk, e2, tmp, scr, &b_lo, &b_hi);
        double half = (a_hi - a_lo > b_hi - b_lo ? a_hi - a_lo : b_hi - b_lo) / 2 + rim_m;
        for (int a = 0; a < 3; a++)
            position[a] = (a_lo + a_hi) / 2 * e1[a] + (b_lo + b_hi) / 2 * e2[a] + (front + half) * r[a];
    }

    /* orientation: principal axes with pose.py's convention (_axes) */
    double cov[9] = {0};
    for (long k = 0; k < nk; k++) {
        double q0 = X0[k] - centroid[0], q1 = X1[k] - centroid[1], q2 = X2[k] - centroid[2];
        cov[0] += q0 * q0; cov[1] += q0 * q1; cov[2] += q0 * q2;
        cov[4] += q1 * q1; cov[5] += q1 * q2; cov[8] += q2 * q2;
    }
    cov[3] = cov[1]; cov[6] = cov[2]; cov[7] = cov[5];
    for (int i = 0; i < 9; i++) cov[i] /= (double)nk;
    double w[3], V[9];
    eigh3(cov, w, V);
    double un = sqrt(dot3(up, up)), u[3] = {up[0] / un, up[1] / un, up[2] / un};
    int iz = 0;
    double best_c = -1;
    for (int k = 0; k < 3; k++) {
        double cc = fabs(V[k] * u[0] + V[3 + k] * u[1] + V[6 + k] * u[2]);
        if (cc > best_c) { best_c = cc; iz = k; }
    }
    double zv[3] = {V[iz], V[3 + iz], V[6 + iz]};
    if (dot3(zv, u) < 0) for (int a = 0; a < 3; a++) zv[a] = -zv[a];
    int ix = iz == 2 ? 1 : 2;                       /* of the other two, the larger variance */
    double xv[3] = {V[ix], V[3 + ix], V[6 + ix]};
    double sg = fabs(xv[0]) > 1e-9 ? xv[0] : -xv[2];
    if (sg < 0) for (int a = 0; a < 3; a++) xv[a] = -xv[a];
    double yv[3], xv2[3];
    cross3(zv, xv, yv);
    cross3(yv, zv, xv2);
    double xn = sqrt(dot3(xv2, xv2)), yn = sqrt(dot3(yv, yv));
    double R[9];
    for (int a = 0; a < 3; a++) { R[3 * a] = xv2[a] / xn; R[3 * a + 1] = yv[a] / yn; R[3 * a + 2] = zv[a]; }

    /* size: visible points and their reflection through the centre */
    double size[3];
    for (int b = 0; b < 3; b++) {
        for (long k = 0; k < nk; k++)
            tmp[k] = fabs(R[b] * (X0[k] - position[0]) + R[3 + b] * (X1[k] - position[1]) + R[6 + b] * (X2[k] - position[2]));
        size[b] = 2 * quantile(tmp, nk, 0.995, scr);
        if (rim) {
            double rb = R[b] * r[0] + R[3 + b] * r[1] + R[6 + b] * r[2];
            double v = 1 - rb * rb;
            size[b] += 2 * rim_m * sqrt(v < 0 ? 0 : (v > 1 ? 1 : v));
        }
    }
    memcpy(out, position, 3 * sizeof(double));
    memcpy(out + 3, R, 9 * sizeof(double));
    memcpy(out + 12, size, 3 * sizeof(double));
    out[15] = centroid[0]; out[16] = centroid[1]; out[17] = centroid[2];
    out[18] = n_valid * (double)nk / (double)n;
    out[19] = rim;
    quat_from_R(R, out + 20);
    rc = (int)nk;
done:
    free(m); free(e); free(sel); free(z); free(par); free(X); free(d); free(tmp); free(scr);
    return rc;
}

/* pose.py's quat_from_R: unit (x, y, z, w), w >= 0, Shepperd's method below trace 0. */
static void quat_from_R(const double *m, double *q) {
    double tr = m[0] + m[4] + m[8];
    if (tr > 0) {
        double s = 2 * sqrt(tr + 1);
        q[0] = (m[7] - m[5]) / s; q[1] = (m[2] - m[6]) / s; q[2] = (m[3] - m[1]) / s; q[3] = s / 4;
    } else {
        int i = 0;
        if (m[4] > m[i * 4]) i = 1;
        if (m[8] > m[i * 4]) i = 2;
        int j = (i + 1) % 3, k = (i + 2) % 3;
        double v = 1 + m[4 * i] - m[4 * j] - m[4 * k];
        double s = 2 * sqrt(v > 1e-300 ? v : 1e-300);
        q[i] = s / 4;
        q[j] = (m[3 * i + j] + m[3 * j + i]) / s;
        q[k] = (m[3 * i + k] + m[3 * k + i]) / s;
        q[3] = (m[3 * k + j] - m[3 * j + k]) / s;
    }
    double n = sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
    for (int a = 0; a < 4; a++) q[a] /= n;
    if (q[3] < 0) for (int a = 0; a < 4; a++) q[a] = -q[a];
}
