"""Hardware: what the machine reports, and the choices that depend on it: device, dtype, attention, the AWQ kernel
and how it is loaded, batch sizes. Pure functions of a `Machine` wherever they can be."""
