"""The application, the top layer: the command line, the main job, forgetting, and what the notebooks show. It
may use every layer below (core, features, training, serving); nothing imports it."""
