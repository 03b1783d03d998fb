"""What the card knows about a build's steps and sets without reading them from disk: which step extends which
manifest, which steps write a set's shards, the set each step belongs to, and each set's source and licence.

One module on purpose: these tables repeat the build's step names, so when the build declares its steps as a graph
the card reads them from there and this module is what goes.
"""

# Stages whose manifest keeps every row of an earlier step's manifest and adds verdicts to it: their input is the
# rows that were ok there, and they are credited only with the verdicts they added.
EXTENDS = {"filter": "synthesis_t2v", "screening": "synthesis_i2v"}
# Steps that write a set's shards from the manifest of another step: their output is the set's index.parquet.
SHARD_STEPS = {"synthetic_shards": ("synthetic", "filter"), "event_shards": ("event", "screening")}
STEP_SETS = {"real_world": "real_world", "prompts": "synthetic", "synthesis_t2v": "synthetic",
             "filter": "synthetic", "synthetic_shards": "synthetic", "event_images": "event",
             "synthesis_i2v": "event", "review_pages": "event", "screening": "event", "event_shards": "event"}

SOURCES = {
    "real_world": {
        "source": "Sekai-Real-HQ walking clips with camera trajectories (Sekai, Hub dataset Lixsp11/Sekai-Project)",
        "url": "https://huggingface.co/datasets/Lixsp11/Sekai-Project",
        "licence": "the terms of the Sekai-Project dataset card; the clips are YouTube videos whose rights stay "
                   "with their owners",
        "made": "camera trajectories -> discrete keyboard and mouse actions; Sekai's scene captions train T2V, "
                "event captions written by a vision-language model train I2V",
    },
    "synthetic": {
        "source": "OpenVid-1M captions (Hub dataset nkp37/OpenVid-1M) rendered by Wan 2.1 text-to-video",
        "url": "https://huggingface.co/datasets/nkp37/OpenVid-1M",
        "licence": "captions: CC-BY-4.0 (OpenVid-1M); videos: outputs of Wan 2.1 (weights under Apache-2.0; the Wan "
                   "licence claims no rights over generated content and restricts harmful uses)",
        "made": "caption dedup and sampling -> Wan 2.1 T2V -> VBench quality score -> top N kept",
    },
    "event": {
        "source": "first-person start images and written event descriptions (urban daily life, sci-fi, fantasy, "
                  "weather) rendered by Wan 2.2 image-to-video",
        "url": "https://huggingface.co/Wan-AI",
        "licence": "images and texts: as supplied to the build (start frames cut from the real-world clips follow "
                   "Sekai's terms); videos: outputs of Wan 2.2 (weights under Apache-2.0, as above)",
        "made": "Wan 2.2 I2V -> manual screening",
    },
}
EVENT_TASKS_NOTE = ("Yume-1.5 says both that the event set is \"used exclusively for T2V\" and that the real-world "
                    "and event sets are \"used for both T2V and I2V\"; which one a build follows is a setting, "
                    "not a fact of the data.")
