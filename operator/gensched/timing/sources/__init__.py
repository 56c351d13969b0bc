"""Carbon-intensity providers (adapters): CSV replay, GB Carbon Intensity, Electricity Maps,
WattTime v3, Prometheus. Each returns actual values and forecasts as a :class:`Series`."""
