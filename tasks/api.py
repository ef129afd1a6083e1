"""Processing runs over the API: start, follow, cancel, retry. Staff only (runs name server paths)."""

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response

from inference.models import ModelVersion

from .models import ProcessingRun
from .selectors import processing_run_progress
from .services import (
    RunConfigurationError,
    processing_run_cancel,
    processing_run_create,
    processing_run_retry_failed,
    processing_run_start,
)


class ProcessingRunSerializer(serializers.ModelSerializer):
    formal_model = serializers.SlugRelatedField(slug_field="name", queryset=ModelVersion.objects.all(),
                                                required=False, allow_null=True)
    alternate_model = serializers.SlugRelatedField(slug_field="name", queryset=ModelVersion.objects.all(),
                                                   required=False, allow_null=True)
    stages = serializers.ListField(child=serializers.ChoiceField(choices=ProcessingRun.Stage.choices),
                                   allow_empty=False)
    paths = serializers.ListField(child=serializers.CharField(max_length=1024), required=False, default=list)
    progress = serializers.SerializerMethodField()

    class Meta:
        model = ProcessingRun
        fields = ["id", "name", "stages", "paths", "rv_catalog_path", "measure_rv", "formal_model", "alternate_model",
                  "release_name", "publish", "publish_partial", "chunk_files", "chunk_spectra", "state",
                  "current_stage", "reason", "stage_seconds", "created_at", "started_at", "finished_at", "progress"]
        read_only_fields = ["state", "current_stage", "reason", "stage_seconds", "created_at", "started_at",
                            "finished_at"]

    def get_progress(self, run: ProcessingRun) -> dict:
        return processing_run_progress(run=run)


class ProcessingRunViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Bulk processing runs. POST creates and starts one; follow it with GET."""

    queryset = ProcessingRun.objects.select_related("formal_model", "alternate_model")
    serializer_class = ProcessingRunSerializer
    permission_classes = [IsAdminUser]
    filterset_class = None

    def perform_create(self, serializer):
        try:
            run = processing_run_create(created_by=self.request.user, **serializer.validated_data)
        except RunConfigurationError as error:
            raise serializers.ValidationError({"detail": str(error)}) from error
        processing_run_start(run=run)
        run.refresh_from_db()
        serializer.instance = run

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        run = self.get_object()
        skipped = processing_run_cancel(run=run)
        run.refresh_from_db()
        return Response({"skipped_chunks": skipped, **self.get_serializer(run).data})

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        run = self.get_object()
        try:
            queued = processing_run_retry_failed(run=run)
        except RunConfigurationError as error:
            return Response({"detail": str(error)}, status=status.HTTP_409_CONFLICT)
        run.refresh_from_db()
        return Response({"queued_chunks": queued, **self.get_serializer(run).data})
