"""The real datasets, one module each, named by ``conf/dataset/<name>.yaml``'s ``_target_``: a function of the
dataset node that returns the paths ``train_json, train_images, val_json, val_images`` (building the dataset if
needed). ``mfexp.data.prepare_dataset`` calls it and applies the novel-category protocol."""
