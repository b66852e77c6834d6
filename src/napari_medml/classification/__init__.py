"""Classification as a task of the engine, at image, object or tile level: samples, the
task (stratified split, loss, validation report), the classifier and its metrics."""
