"""TFDS dataset builders (array_record, read with `as_data_source()`)."""
