"""The web console's static files (liferaft/console/static/) and the simulator replay viewer."""
