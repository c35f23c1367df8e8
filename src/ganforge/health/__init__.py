"""Training health: signals (`signals`), the named states and their rules (`rules`), and what is
done about them (`actions`). The Lightning callback that runs them is
`ganforge.callbacks.health.HealthMonitor`."""
