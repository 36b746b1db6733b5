"""nudiff: non-uniform diffusion models.

One linear diffusion ``u_t = alpha_i(t) u_0 + sigma_i(t) eps`` acting on the whitened components
``u = (B(x) - mu) / s`` of the data in an orthonormal basis ``B``, with a schedule per component.
"""

__version__ = "0.1.0"
