"""mmflow plugin: the LivePortrait keypoint motion stream."""
