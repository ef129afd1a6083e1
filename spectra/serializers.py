from rest_framework import serializers

from core.flags import SPECTRUM_FLAGS

from .models import Spectrum, Star


class StarSerializer(serializers.ModelSerializer):
    class Meta:
        model = Star
        fields = ["id", "designation", "gaia_source_id", "ra", "dec"]


class SpectrumSerializer(serializers.ModelSerializer):
    designation = serializers.CharField(source="star.designation", read_only=True)
    gaia_source_id = serializers.IntegerField(source="star.gaia_source_id", read_only=True, allow_null=True)
    ra = serializers.FloatField(source="star.ra", read_only=True)
    dec = serializers.FloatField(source="star.dec", read_only=True)
    flag_names = serializers.SerializerMethodField()

    class Meta:
        model = Spectrum
        fields = [
            "id", "medres_specid", "medid_blue", "medid_red", "kind", "star", "designation",
            "gaia_source_id", "ra", "dec", "obsid", "objname", "plan_id", "spectrograph", "fiber",
            "lmjd", "lmjm", "exptime", "snr_blue", "snr_red", "rv_blue", "rv_red", "rv_blue_err",
            "rv_red_err", "rv_source", "file_format", "data_release", "status", "flags", "flag_names",
        ]

    def get_flag_names(self, spectrum: Spectrum) -> list[str]:
        return SPECTRUM_FLAGS.names(spectrum.flags)
